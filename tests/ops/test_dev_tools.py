"""`archomata dev`'s parts that need no running stack: the mail sink's console and
`archomata dev env` before any `make run` (its exports are tested on a running stack in
tests/ops/test_dev.py)."""

from __future__ import annotations

import smtplib
import socket
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiohttp import web

from archomata.__main__ import main
from archomata.config import Config
from archomata.http.server import listen_hosts, start
from archomata.ops.dev import _start_mail_sink
from archomata.ops.devservers import free_port


def test_mails_are_printed_with_plain_line_ends(capfd: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    sink = _start_mail_sink(port)
    try:
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = "a@example.test", "b@example.test", "Hi"
        mail.set_content("first line\nhttp://localhost:8080/verify?token=abc\nlast line\n")
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.send_message(mail)
        deadline = time.monotonic() + 10
        out = ""
        while "last line" not in out and time.monotonic() < deadline:
            time.sleep(0.05)
            out += capfd.readouterr().out
    finally:
        sink.stop()
    assert "first line\nhttp://localhost:8080/verify?token=abc\nlast line\n" in out
    assert "\r" not in out


def test_dev_env_without_a_stack_says_to_run_make_run_first(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev", "--data-dir", str(tmp_path), "env"]) == 2
    captured = capsys.readouterr()
    assert "run `make run`" in captured.err and captured.out == ""
    assert not (tmp_path / "dev-state.json").exists()  # made by `make run` only


async def test_localhost_is_served_on_both_loopback_addresses_when_the_machine_has_both(
        config: Config) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        expected = {"127.0.0.1", "::1"}
    except OSError:
        expected = {"127.0.0.1"}
    assert set(listen_hosts("localhost")) == expected
    assert listen_hosts("127.0.0.1") == ("127.0.0.1",) and listen_hosts("::") == ("::",)
    runner = await start(web.Application(), config, host="localhost", port=0)
    try:
        bound = {(address[0], address[1]) for address in runner.addresses}
    finally:
        await runner.cleanup()
    assert {host for host, _ in bound} == expected
    assert len({port for _, port in bound}) == 1  # port 0: one port chosen for both
