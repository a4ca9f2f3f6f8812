"""Users, linked SSO identities and mail tokens: SQL beside the typed functions."""
