"""Who is calling: passwords, tokens, sessions, API keys, secrets at rest, revocation."""
