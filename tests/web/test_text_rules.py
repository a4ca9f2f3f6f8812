"""The text rules reach every body field: a string field in a request schema is a `Text`
(or a value type stricter than it), so a new field cannot forget the single-line rule."""

from __future__ import annotations

from collections.abc import Iterator

from marshmallow import Schema, fields

from archomata.app import create_app
from archomata.config import Config
from archomata.text_rules import text_problem
from archomata.trading.values import DecimalString, Symbol
from archomata.web.openapi import DOC_ATTR
from archomata.web.text import Text

STRICTER = (Text, DecimalString, Symbol)


def _strings(field: fields.Field, name: str) -> Iterator[tuple[str, fields.Field]]:
    if isinstance(field, fields.Nested):
        schema = field.schema
        for sub_name, sub in schema.load_fields.items():
            yield from _strings(sub, f"{name}.{sub_name}")
    elif isinstance(field, fields.List):
        yield from _strings(field.inner, f"{name}[]")
    elif isinstance(field, fields.Dict):
        if field.key_field is not None:
            yield from _strings(field.key_field, f"{name}{{key}}")
        if field.value_field is not None:
            yield from _strings(field.value_field, f"{name}{{value}}")
    elif isinstance(field, fields.String):
        yield name, field


def _request_schemas(config: Config) -> Iterator[type[Schema]]:
    for route in create_app(config).router.routes():
        route_doc = getattr(route.handler, DOC_ATTR, None)
        if route_doc is not None and route_doc.request is not None:
            yield route_doc.request


class TestTextRules:
    def test_every_string_field_of_a_request_body_is_text(self, config: Config) -> None:
        loose = []
        for schema in set(_request_schemas(config)):
            for name, field in schema().load_fields.items():
                loose += [f"{schema.__name__}.{path}" for path, string in
                          _strings(field, name) if not isinstance(string, STRICTER)]
        assert not loose

    def test_the_rules(self) -> None:
        assert text_problem("tab\tand\nlines\r", multiline=True) is None
        for bad in ("\x00", "\x01", "\x1f", "\x7f", "\x0b", "\x0c"):
            assert text_problem(f"a{bad}b", multiline=True)
        for bad in ("\t", "\n", "\r", "\x85", "\u2028", "\u2029", "\x9f"):
            assert text_problem(f"a{bad}b", multiline=False)
        assert text_problem("Zoë Ünïcödé ✓ 名前", multiline=False) is None


class TestProviderClaims:
    """An identity provider's text reaches the database and mail headers as a client's."""

    def test_a_claim_with_a_control_character_is_not_taken(self) -> None:
        from archomata.identity.oidc import _text_claim
        assert _text_claim({"email": "a@b.test"}, "email") == "a@b.test"
        for bad in ("a\x00@b.test", "a@b.test\r\nBcc: c@d.test", "a\t@b.test"):
            assert _text_claim({"email": bad}, "email") is None

    def test_a_display_name_keeps_its_words_on_one_line(self) -> None:
        from archomata.identity.oidc import _display_name
        assert _display_name({"name": "Ada\r\nBcc: x@y.test\x00 Lovelace"}) == \
            "Ada Bcc: x@y.test Lovelace"
        assert _display_name({"name": "\x00\n"}) is None
        assert _display_name({"name": 5}) is None
