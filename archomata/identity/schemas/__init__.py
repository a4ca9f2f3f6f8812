"""Request and response bodies of the sign-in and SSO routes; unknown fields refused."""
