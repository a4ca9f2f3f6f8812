"""The SSO world of tests/handlers/test_sso.py, for the tests that walk every way in."""

from tests.handlers.test_sso import providers, world  # noqa: F401
