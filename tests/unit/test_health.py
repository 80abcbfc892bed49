"""The health gate and the public-url watch against real HTTP servers on 127.0.0.1 that misbehave:
one that drips its status line byte by byte, one whose body never ends. Every probe has a deadline
for its whole exchange, no body is read, and the gate ends at health-timeout whatever they do."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bluegreen import health
from bluegreen.config import PROBE_SECONDS, status_up
from bluegreen.health import probe_pause, wait_healthy, watch_public_url
from bluegreen.remote import Result

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def test_health_probes_start_fast_and_back_off_to_the_interval() -> None:
    assert [probe_pause(n, 2) for n in range(5)] == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert probe_pause(0, 1) == 0.25 and probe_pause(9, 1) == 1.0


async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers one byte of its status line a second, forever."""
    await reader.readuntil(b"\r\n\r\n")
    with contextlib.suppress(ConnectionError):
        for byte in b"HTTP/1.1 200 OK\r\n" * 100:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(1)


async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """200 at once, then a body that never ends."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
    with contextlib.suppress(ConnectionError):
        while True:
            writer.write(b"x" * 65536)
            await writer.drain()
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def server(serve: Serve) -> AsyncIterator[int]:
    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield listening.sockets[0].getsockname()[1]
    finally:
        listening.close()


class Tunnel:
    """The host's side of the SSH forward, here a straight line to the local server."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def can_forward(self, host: str, port: int) -> bool:
        return True

    @contextlib.asynccontextmanager
    async def forward(self, host: str, port: int) -> AsyncIterator[int]:
        yield self.port

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: int = 0,
        check: bool = True,
        hold_stdin: bool = False,
    ) -> Result:
        raise AssertionError("no curl on the host: forwarding works")


def test_a_dripping_endpoint_holds_the_gate_no_longer_than_health_timeout() -> None:
    async def go() -> tuple[float, health.HealthReport]:
        async with server(drip) as port:
            started = time.monotonic()
            report = await wait_healthy(Tunnel(port), ["http://127.0.0.1:8001/api/v1/"], 3, 1)
            return time.monotonic() - started, report

    elapsed, report = asyncio.run(go())
    assert not report.healthy and report.results[0].last.startswith("no answer within")
    assert elapsed < 3 + 1  # the deadline is the gate's, not each read's (it would drip for 100 s)


def test_an_endless_body_is_never_read_only_the_status_line_counts() -> None:
    async def go() -> health.HealthReport:
        async with server(endless) as port:
            return await asyncio.wait_for(wait_healthy(Tunnel(port), ["http://127.0.0.1:8001/"], 10, 1), 10)

    report = asyncio.run(go())
    assert report.healthy and report.results[0].last == "HTTP 200" and report.results[0].attempts == 1


def test_public_url_that_hangs_fails_within_its_probe_deadline() -> None:
    async def go() -> tuple[float, str]:
        async with server(drip) as port:
            started = time.monotonic()
            last = await watch_public_url(f"http://127.0.0.1:{port}/", health.is_2xx)
            return time.monotonic() - started, last

    elapsed, last = asyncio.run(go())
    assert last.startswith("no answer within") and elapsed < PROBE_SECONDS + 1


async def redirect_to_login(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """`/` sends to /login, which fails: following the redirect would judge the login page."""
    request = await reader.readuntil(b"\r\n\r\n")
    if request.startswith(b"GET / "):
        writer.write(b"HTTP/1.1 302 Found\r\nLocation: /login\r\nContent-Length: 0\r\n\r\n")
    else:
        writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    writer.close()


def test_a_redirect_means_up_unless_public_url_status_narrows_it_and_is_never_followed() -> None:
    async def go(statuses: tuple[str, ...]) -> str:
        async with server(redirect_to_login) as port:
            return await watch_public_url(f"http://127.0.0.1:{port}/", lambda code: status_up(code, statuses))

    assert asyncio.run(go(("2xx", "3xx"))) == ""
    assert asyncio.run(go(("2xx",))) == "HTTP 302"
    assert asyncio.run(go(("200", "302"))) == ""


def self_signed(tmp_path: Path) -> ssl.SSLContext:
    """A TLS server context whose certificate no CA signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    writer.close()


def test_public_url_verifies_its_tls_certificate_unless_the_opt_out_says_not(tmp_path: Path) -> None:
    context = self_signed(tmp_path)

    async def go(verify: bool) -> str:
        listening = await asyncio.start_server(ok, "127.0.0.1", 0, ssl=context)
        try:
            port = listening.sockets[0].getsockname()[1]
            return await watch_public_url(f"https://127.0.0.1:{port}/", health.is_2xx, verify=verify)
        finally:
            listening.close()

    assert asyncio.run(go(True)) == "its TLS certificate did not verify"
    assert asyncio.run(go(False)) == ""
