"""Outgoing mail through SMTP (aiosmtplib). Links are built from ARCHOMATA_FRONTEND_URL
only, never from the request's Host header."""

from __future__ import annotations

import logging
from email.message import EmailMessage
from urllib.parse import quote, urlsplit

import aiosmtplib

from archomata.config import Config

log = logging.getLogger(__name__)


class Mailer:
    def __init__(self, config: Config) -> None:
        self.config = config
        parts = urlsplit(config.smtp_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.use_tls = parts.scheme == "smtps"
        self.username = parts.username
        self.password = parts.password

    def link(self, path: str, token: str) -> str:
        return f"{self.config.frontend_url}{path}?token={quote(token, safe='')}"

    async def send(self, to: str, subject: str, body: str) -> bool:
        """Sends one mail; a failure is logged (without the body: it holds a token) and
        reported as False, never raised, so a mail outage cannot fail the request that
        already committed."""
        message = EmailMessage()
        message["From"] = self.config.mail_from
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        try:
            await aiosmtplib.send(message, hostname=self.host, port=self.port,
                                  use_tls=self.use_tls, username=self.username,
                                  password=self.password, timeout=10)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            log.error("mail not sent", extra={"subject": subject, "error": type(exc).__name__})
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

    async def send_invitation(self, to: str, org_name: str, token: str) -> bool:
        return await self.send(to, f"You are invited to {org_name} on Archomata",
                               f"You have been invited to join {org_name}. Accept here:\n\n"
                               f"{self.link('/accept-invitation', token)}\n")
