"""Who is calling and how they got in: passwords, tokens, sessions and their revocation,
the one sign-in (signin.py) every way in opens sessions through, registration
(onboarding.py), SSO (oidc.py for the provider, linking.py for accounts, sso_signin.py
for the callback's flow), the platform administrator's changes to a user (user_admin.py),
and the web side of signing in (web.py: cookie, login shape). What the flows work with
is a Reception (reception.py); a password being set passes new_password.py. Below orgs:
what an org adds to a flow (a joining held on a challenge, the invitations a disabled
account loses) is handed in by create_app."""
