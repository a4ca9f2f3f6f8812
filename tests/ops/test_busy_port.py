"""A port already taken (a second `make run`, another service): `archomata dev` and
`archomata serve` say which port and how to pick another, in one line with no
traceback, and leave nothing running. The port is really taken: a socket listens on it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from archomata.http import server

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def said_plainly(output: str, port: int, host: str = "127.0.0.1") -> None:
    assert "Traceback" not in output, output
    assert f"port {port} on {host} is already in use" in output, output
    assert f"ARCHOMATA_PORT={port + 1}" in output, output
    assert "Archomata is serving" not in output, output  # no banner before it


@pytest.mark.slow
def test_make_run_on_a_taken_port_says_so_first_and_leaves_nothing_running(
        tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHOMATA_")}
    with taken_port() as port:
        env.update(PYTHONPATH=str(REPO), ARCHOMATA_PORT=str(port))
        proc = subprocess.Popen(
            [sys.executable, "-m", "archomata", "dev", "--data-dir", str(tmp_path / ".local")],
            cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 2, output
    said_plainly(output, port, "localhost")  # `make run` serves localhost
    assert output.count("\n") == 1, output  # the one line, nothing before it
    # Nothing was started: no server of its session lives on, no database was made.
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    assert not (tmp_path / ".local" / "postgres").exists()
    assert not (tmp_path / ".local" / "redis").exists()


async def test_serve_on_a_taken_port_says_so_and_exits(environ: dict[str, str]) -> None:
    with taken_port() as port:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "archomata", "serve",
            env={**environ, "ARCHOMATA_PORT": str(port)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    said_plainly(err.decode(), port)


def test_a_port_is_free_once_nothing_listens_on_it() -> None:
    with taken_port() as port, pytest.raises(server.PortInUseError,
                                              match=f"port {port} on 127.0.0.1"):
        server.ensure_free("127.0.0.1", port)
    server.ensure_free("127.0.0.1", port)  # closed: free again
