"""The second factor: TOTP (RFC 6238) and recovery codes."""
