"""Outgoing mail through SMTP (aiosmtplib). Links are built from ARCHOMATA_FRONTEND_URL
only, never from the request's Host header."""

from __future__ import annotations

import logging
from collections.abc import Callable
from email.message import EmailMessage
from urllib.parse import quote, urlsplit

import aiosmtplib

from archomata.config import Config
from archomata.text_rules import NOT_SINGLE_LINE

log = logging.getLogger(__name__)


class Mailer:
    def __init__(self, config: Config,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self.config = config
        parts = urlsplit(config.smtp_url.reveal())
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.use_tls = parts.scheme == "smtps"
        self.username = parts.username
        self.password = parts.password
        self.on_failure = on_failure or (lambda stage: None)

    def link(self, path: str, token: str) -> str:
        return f"{self.config.frontend_url}{path}?token={quote(token, safe='')}"

    def message(self, to: str, subject: str, body: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.config.mail_from
        message["To"] = to
        # Text from the database (an org name) may predate the single-line rule: a line
        # break in a header is refused by the email package, or would start a new header.
        message["Subject"] = " ".join(NOT_SINGLE_LINE.sub(" ", subject).split())
        message.set_content(body)
        return message

    async def send(self, to: str, subject: str, body: str) -> bool:
        """Sends one mail; a failure to build or to send it is logged (without the body
        or the address: the body holds a token), counted, and reported as False, never
        raised: the request that sends it has already committed, and must not fail."""
        stage = "build"
        try:
            message = self.message(to, subject, body)
            stage = "send"
            await aiosmtplib.send(message, hostname=self.host, port=self.port,
                                  use_tls=self.use_tls, username=self.username,
                                  password=self.password, timeout=10)
        except Exception as exc:  # fail open: see the docstring; the counter alerts
            log.error("mail not sent", extra={"stage": stage, "error": type(exc).__name__})
            self.on_failure(stage)
            return False
        return True

    async def send_verification(self, to: str, token: str) -> bool:
        return await self.send(to, "Verify your Archomata email address",
                               "Confirm your email address by opening this link:\n\n"
                               f"{self.link('/verify-email', token)}\n")

    async def send_password_reset(self, to: str, token: str) -> bool:
        return await self.send(to, "Reset your Archomata password",
                               "Someone asked to reset your password. If it was you, open:\n\n"
                               f"{self.link('/reset-password', token)}\n\n"
                               "If not, ignore this mail.\n")

    async def send_registration_attempt(self, to: str) -> bool:
        return await self.send(to, "Someone tried to register with your Archomata address",
                               "Someone tried to create an Archomata account with this "
                               "address, which already has one. Nothing was changed.\n\n"
                               "If it was you, sign in (a forgotten password can be reset "
                               f"from there):\n\n{self.config.frontend_url}/login\n\n"
                               "If not, ignore this mail.\n")

    async def send_invitation(self, to: str, org_name: str, token: str) -> bool:
        return await self.send(to, f"You are invited to {org_name} on Archomata",
                               f"You have been invited to join {org_name}. Accept here:\n\n"
                               f"{self.link('/accept-invitation', token)}\n")
