"""The tenants: the orgs and who belongs to them (org rows, memberships, a membership's
role). Below access and identity, which read them to say who a caller is and where they
sign in; the org's own administration (members, groups, invitations) is archomata.orgs."""
