"""Orgs and what belongs to them: members, invitations, groups (service.py: what the
routes of more than one of them share)."""
