"""Orgs and what belongs to them: members, invitations, groups (service.py: what the
routes of more than one of them share, disabling and enabling an org). The org rows and
memberships that signing in reads are below identity, in archomata.tenancy."""
