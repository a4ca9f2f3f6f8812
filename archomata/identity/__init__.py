"""Who is calling and how they got in: passwords, tokens, sessions and their revocation,
the one sign-in (signin.py) every way in opens sessions through, registration
(onboarding.py), SSO (oidc.py for the provider, linking.py for accounts), and the web
side of signing in (web.py: cookie, login shape)."""
