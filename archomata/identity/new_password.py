"""The one check of a password being set, wherever one is: registration, password change
and reset (their schemas, identity/schemas/auth.py), a new account's at invitation
acceptance (archomata.orgs.service) and `create-admin` (ops/cli_admin.py)."""

from __future__ import annotations

from archomata.errors import ValidationFailed
from archomata.identity.breached import refuse_breached
from archomata.identity.passwords import MAX_LENGTH, MIN_LENGTH


def check(password: str, field: str = "password") -> None:
    """ValidationFailed (422): `validation_failed` naming `field` for a length outside
    MIN_LENGTH..MAX_LENGTH, `password_breached` for one of the bundled list of breached
    passwords (never echoed)."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValidationFailed(f"A password has {MIN_LENGTH} to {MAX_LENGTH} characters.",
                               errors={field: [f"Between {MIN_LENGTH} and {MAX_LENGTH} "
                                               "characters."]})
    refuse_breached(password, field)
