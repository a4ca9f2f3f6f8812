"""The listening service: TLS 1.3 only, bounded heads, slow clients cut off."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import ipaddress
import logging
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from archomata import keys
from archomata.access.guards import public
from archomata.access.route_policy import RateClass
from archomata.config import Config
from archomata.http import server
from archomata.ops.devservers import free_port
from tests import sockets
from tests.conftest import app_with_routes

routes = web.RouteTableDef()


@routes.post("/api/v1/_test/upload")
@public(rate=RateClass.API)  # spends no login budget of the suite
async def upload(request: web.Request) -> web.Response:
    return web.json_response({"bytes": len(await request.read())})


@routes.get("/api/v1/_test/stream")
@public(rate=RateClass.API)  # spends no login budget of the suite
async def endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):  # until the client leaves or is cut
        while True:
            await response.write(b"x" * 2**16)
    return response


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def serving(config: Config) -> tuple[server.Runner, int]:
    runner = await server.start(app_with_routes(config, routes), config,
                                host="127.0.0.1", port=0)
    return runner, runner.addresses[0][1]


@pytest.fixture
async def tls(config: Config, tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    cert, key = self_signed(tmp_path)
    runner, port = await serving(dataclasses.replace(config, tls_cert=str(cert),
                                                     tls_key=str(key)))
    yield port, cert
    await runner.cleanup()


@pytest.fixture
async def plain(config: Config) -> AsyncIterator[int]:
    runner, port = await serving(dataclasses.replace(config, header_timeout_seconds=0.5))
    yield port
    await runner.cleanup()


def client_context(cert: Path, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    context.minimum_version = version
    context.maximum_version = version
    return context


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


GET_LIVE = b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.fixture
async def stalling(config: Config) -> AsyncIterator[int]:
    runner, port = await serving(dataclasses.replace(config, stream_stall_seconds=1))
    yield port
    await runner.cleanup()


class TestTls:
    async def test_tls_1_3_is_served_with_hsts(self, tls: tuple[int, Path]) -> None:
        port, cert = tls
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(cert, ssl.TLSVersion.TLSv1_3),
            server_hostname="localhost")
        try:
            assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
            writer.write(GET_LIVE)
            response = await read_response(reader)
        finally:
            writer.close()
        assert response.startswith(b"HTTP/1.1 200")
        assert b"Strict-Transport-Security: max-age=63072000; includeSubDomains" in response

    async def test_tls_1_2_handshake_is_refused(self, tls: tuple[int, Path],
                                                tmp_path: Path) -> None:
        port, cert = tls
        context = client_context(cert, ssl.TLSVersion.TLSv1_2)
        # asyncio drops the connection on a failed handshake, alert or not.
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                          server_hostname="localhost")
        assert await tls_1_2_works_where_allowed(context, cert, tmp_path)


async def tls_1_2_works_where_allowed(client: ssl.SSLContext, cert: Path,
                                      tmp_path: Path) -> bool:
    """The same client context against a server that permits TLS 1.2: so the refusal
    above is the service's minimum version, not a client that cannot speak at all."""
    permissive = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    permissive.minimum_version = ssl.TLSVersion.TLSv1_2
    permissive.load_cert_chain(cert, tmp_path / "key.pem")

    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    listener = await asyncio.start_server(close, "127.0.0.1", 0, ssl=permissive)
    try:
        port = listener.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client,
                                                  server_hostname="localhost")
        version = writer.get_extra_info("ssl_object").version()
        writer.close()
    finally:
        listener.close()
        await listener.wait_closed()
    return version == "TLSv1.2"


class TestSlowClients:
    async def test_head_sent_byte_by_byte_is_cut_off(self, plain: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", plain)
        started = time.monotonic()

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for byte in GET_LIVE[:-2] + b"X-Slow: 1\r\n" * 50:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.02)

        sender = asyncio.create_task(trickle())
        try:
            # A close with the trickled bytes still unread arrives as a reset; either
            # way the service ended the connection without answering.
            try:
                received = await asyncio.wait_for(reader.read(), timeout=5)
            except ConnectionResetError:
                received = b""
            assert received == b""
        finally:
            sender.cancel()
            writer.close()
        assert time.monotonic() - started < 1.5

    async def test_idle_keep_alive_split_head_and_slow_body_are_not_cut_off(
            self, plain: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", plain)
        try:
            writer.write(GET_LIVE)
            assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.7)  # idle longer than the head deadline
            writer.write(b"POST /api/v1/_test/upload HTTP/1.1\r\nHost: localhost\r\n")
            await asyncio.sleep(0.2)  # a head in two packets, within the deadline
            writer.write(b"Content-Type: application/json\r\nContent-Length: 8\r\n\r\n")
            for chunk in (b"[1,", b"2,", b"3]  "):
                await asyncio.sleep(0.3)  # the body takes longer than the head deadline
                writer.write(chunk)
            response = await read_response(reader)
        finally:
            writer.close()
        assert response.startswith(b"HTTP/1.1 200")
        assert response.endswith(b'{"bytes": 8}')

    async def test_oversized_header_is_refused_and_not_logged(
            self, plain: int, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO)
        reader, writer = await asyncio.open_connection("127.0.0.1", plain)
        try:
            writer.write(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nAuthorization: "
                         + b"secret" * 1500 + b"\r\n\r\n")
            response = await asyncio.wait_for(reader.read(), timeout=5)
        finally:
            writer.close()
        assert response.split(b" ", 2)[1] == b"400"
        assert "malformed request refused" in caplog.text
        assert "secret" not in caplog.text

    async def test_a_response_nobody_reads_is_cut_and_a_slow_reader_is_not(
            self, stalling: int) -> None:
        idle = await sockets.request(stalling, "/api/v1/_test/stream")
        slow = await sockets.request(stalling, "/api/v1/_test/stream")
        try:
            assert (await idle.head())[0] == (await slow.head())[0] == 200
            started, received = time.monotonic(), 0
            while time.monotonic() - started < 4:  # four times the stall cut-off
                received += len(await asyncio.wait_for(slow.reader.read(4096), 5))
                await asyncio.sleep(0.05)
            assert received > 100_000
            assert await asyncio.wait_for(slow.reader.read(4096), 5)  # still streaming
            # The endless stream ended: the service cut the client that took nothing.
            assert len(await idle.until_cut()) < 2**20
        finally:
            idle.close()
            slow.close()

    async def test_start_on_a_taken_port_fails_and_cleans_up(self, config: Config) -> None:
        runner, port = await serving(config)
        try:
            app = app_with_routes(config, routes)
            with pytest.raises(OSError, match=r"(?i)address already in use"):
                await server.start(app, config, host="127.0.0.1", port=port)
            assert app[keys.DB_POOL].is_closing()
        finally:
            await runner.cleanup()

    def test_connection_settings_bound_heads_and_idle_time(self, config: Config) -> None:
        settings = server.connection_settings(config)
        assert settings["max_line_size"] == settings["max_field_size"] == 8190
        assert settings["max_headers"] == 100
        assert settings["keepalive_timeout"] == config.keepalive_timeout_seconds == 75
        assert server.tls_context(config) is None


class TestServeCommand:
    async def test_serve_answers_with_the_edge_headers_and_stops_on_sigterm(
            self, environ: dict[str, str]) -> None:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "archomata", "serve",
            env={**environ, "ARCHOMATA_PORT": str(port)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            response = await until_served(port)
            assert response.startswith(b"HTTP/1.1 200")
            assert b"X-Content-Type-Options: nosniff" in response
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=15)
        assert process.returncode == 0, stderr.decode()
        assert b"Traceback" not in stderr


async def until_served(port: int) -> bytes:
    for _ in range(150):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        try:
            writer.write(GET_LIVE)
            return await read_response(reader)
        finally:
            writer.close()
    raise AssertionError("archomata serve never answered")
