"""Org, member, group, invitation and platform-administration routes."""
