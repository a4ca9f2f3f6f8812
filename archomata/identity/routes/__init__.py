"""Sign-in, SSO, account and identity-link routes: thin handlers over the services."""
