"""A number a client writes is ASCII digits: `str.isdigit`, `isdecimal`, `\\d` and `int()`
also take fullwidth, Arabic-Indic or superscript digits, which either reach `int()` and
fail (a 500) or read as another spelling of the same number. Each reader of a
number from client text refuses them as it refuses any other non-number."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from archomata import keys
from archomata.config import Config
from archomata.errors import BadRequest, NotFound
from archomata.http.middlewares.body_limit import body_limit_middleware
from archomata.trading.values import parse_decimal
from archomata.web.params import int_param, uuid_param
from tests.factories import signed_up

ARABIC_INDIC_12 = "\u0661\u0662"
FULLWIDTH_12 = "\uff11\uff12"
SUPERSCRIPT_2 = "\u00b2"  # a Latin-1 character: a header can carry it


def test_a_path_number_in_other_digits_names_nothing() -> None:
    for text in (ARABIC_INDIC_12, FULLWIDTH_12, SUPERSCRIPT_2, "1\u0662"):
        request = make_mocked_request("GET", "/x", match_info={"ticket": text})
        with pytest.raises(NotFound):
            int_param(request, "ticket")
    assert int_param(make_mocked_request("GET", "/x", match_info={"ticket": "12"}),
                     "ticket") == 12


def test_a_path_id_in_other_digits_names_nothing() -> None:
    ascii_id = "12345678-1234-1234-1234-123456789012"
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in ascii_id)
    request = make_mocked_request("GET", "/x", match_info={"id": fullwidth})
    with pytest.raises(NotFound):
        uuid_param(request, "id")
    assert str(uuid_param(make_mocked_request("GET", "/x", match_info={"id": ascii_id}),
                          "id")) == ascii_id


async def test_a_content_length_in_other_digits_is_a_bad_request(config: Config) -> None:
    app = web.Application()
    app[keys.CONFIG] = config

    async def handler(_: web.Request) -> web.StreamResponse:
        return web.Response()

    for declared in (SUPERSCRIPT_2, ARABIC_INDIC_12):
        request = make_mocked_request("POST", "/x", headers={"Content-Length": declared},
                                      app=app)
        with pytest.raises(BadRequest):
            await body_limit_middleware(request, handler)
    fine = make_mocked_request("POST", "/x", headers={"Content-Length": "12"}, app=app)
    assert (await body_limit_middleware(fine, handler)).status == 200


def test_a_decimal_in_other_digits_is_not_a_decimal() -> None:
    for text in (f"{ARABIC_INDIC_12}.5", f"0.{FULLWIDTH_12}", "\u0661"):
        with pytest.raises(ValueError, match="decimal"):
            parse_decimal(text)
    assert str(parse_decimal("12.5")) == "12.5"


async def test_a_query_number_in_other_digits_is_a_422(client: Any, mail_sink: Any) -> None:
    admin = await signed_up(client, mail_sink)
    for path in ("/api/v1/audit-logs", "/api/v1/org/invitations"):
        for limit in (ARABIC_INDIC_12, FULLWIDTH_12, SUPERSCRIPT_2, " 12"):
            response = await client.get(path, params={"limit": limit}, headers=admin.auth)
            assert response.status == 422, (path, limit, await response.text())
            assert "limit" in (await response.json())["errors"]
        assert (await client.get(path, params={"limit": "12"}, headers=admin.auth)
                ).status == 200
