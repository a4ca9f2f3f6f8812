"""Orgs, members, groups and invitations: SQL beside the typed functions."""
