"""The SSO world of tests/identity/test_sso.py, for the tests that walk every way in."""

from tests.identity.test_sso import providers, world  # noqa: F401
