"""Mail never fails the request that sends it: it has already committed."""

from __future__ import annotations

import dataclasses
from typing import Any

from archomata import keys
from archomata.config import Config, Secret
from archomata.mail import Mailer
from archomata.ops.devservers import free_port


def _mailer(config: Config, failures: list[str], smtp_url: str | None = None) -> Mailer:
    if smtp_url is not None:
        config = dataclasses.replace(config, smtp_url=Secret(smtp_url))
    return Mailer(config, on_failure=failures.append)


class TestMailer:
    async def test_a_mail_that_cannot_be_built_is_counted_not_raised(
            self, config: Config, mail_sink: Any) -> None:
        failures: list[str] = []
        sent = await _mailer(config, failures).send("a@b.test\r\nBcc: c@d.test", "Hi", "body")
        assert sent is False
        assert failures == ["build"]

    async def test_a_mail_server_down_is_counted_not_raised(self, config: Config) -> None:
        failures: list[str] = []
        mailer = _mailer(config, failures, f"smtp://127.0.0.1:{free_port()}")
        assert await mailer.send("a@b.test", "Hi", "body") is False
        assert failures == ["send"]

    async def test_a_subject_from_stored_text_is_kept_on_one_line(
            self, config: Config, mail_sink: Any) -> None:
        failures: list[str] = []
        to = "one-line@example.test"
        assert await _mailer(config, failures).send(to, "Acme\r\nBcc: x@y.test\u2028Z", "b")
        mail = mail_sink.to(to)[-1]
        assert (mail["Subject"], mail["Bcc"], failures) == ("Acme Bcc: x@y.test Z", None, [])

    async def test_failures_reach_the_metrics(self, client: Any) -> None:
        app = client.server.app
        await app[keys.MAILER].send("a@b.test\nBcc: c@d.test", "Hi", "body")
        metrics = await (await client.get("/metrics")).text()
        assert 'archomata_mail_failures_total{stage="build"} 1.0' in metrics
