"""Store dataclasses go to the client as they are (orjson, fast); the marshmallow schemas
document them in OpenAPI. These tests keep the two the same shape."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from marshmallow import Schema

from archomata.access.roles import Role
from archomata.access.schemas import RoleSchema
from archomata.orgs.schemas import GroupSchema, InvitationSchema, MemberSchema
from archomata.orgs.store.groups import Group
from archomata.orgs.store.invitations import Invitation
from archomata.orgs.store.members import Member
from archomata.tenancy.org_role import OrgRole
from archomata.tenancy.orgs import Org
from archomata.web.json_io import dumps
from archomata.web.schemas import OrgSchema

NOW = datetime(2026, 11, 29, 1, 2, 3, 456789, tzinfo=UTC)
REF = {"id": str(uuid.uuid4()), "name": "Trader"}


@pytest.mark.parametrize(("value", "schema"), [
    (Member(uuid.uuid4(), "a@b.c", "A", OrgRole.MEMBER, (REF,), (REF,), NOW), MemberSchema),
    (Group(uuid.uuid4(), "Desk", "", (REF,), (REF,), NOW, NOW), GroupSchema),
    (Org(uuid.uuid4(), "Acme", False, NOW), OrgSchema),
    (Invitation(uuid.uuid4(), uuid.uuid4(), "a@b.c", OrgRole.ADMINISTRATOR,
                (uuid.uuid4(),), (), uuid.uuid4(), NOW, NOW), InvitationSchema),
    (Invitation(uuid.uuid4(), uuid.uuid4(), "a@b.c", OrgRole.MEMBER, (), (), None, NOW, NOW),
     InvitationSchema),
    (Role(uuid.uuid4(), "Viewer", "Reads", ("accounts:read",)), RoleSchema),
])
def test_dataclass_serialises_as_its_schema_documents(value: Any, schema: type[Schema]) -> None:
    fast = orjson.loads(dumps(value))
    documented = json.loads(json.dumps(schema().dump(value), default=str))
    assert fast == documented


def test_decimals_are_strings_and_sets_are_sorted_lists() -> None:
    assert orjson.loads(dumps({"v": Decimal("1234.50"), "s": frozenset({"b", "a"})})) == \
        {"v": "1234.50", "s": ["a", "b"]}


def test_unknown_types_are_refused_not_stringified() -> None:
    with pytest.raises(TypeError):
        dumps({"x": object()})


@pytest.mark.parametrize(("value", "text"), [
    (Decimal("0E-8"), "0.00000000"), (Decimal("1E-8"), "0.00000001"),
    (Decimal("1E+3"), "1000"), (Decimal("-12.3400"), "-12.3400"), (Decimal("7"), "7"),
])
def test_decimals_never_go_out_in_exponent_form(value: Decimal, text: str) -> None:
    assert orjson.loads(dumps(value)) == text
