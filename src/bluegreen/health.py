"""Health gate: every URL must answer 2xx. Probed with httpx through an SSH port forward, so URLs are
as seen from the host (e.g. http://127.0.0.1:8001/health); from the host with curl if it refuses
forwarding."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from . import commands
from .remote import Remote

PROBE_TIMEOUT = 5


@dataclass
class UrlHealth:
    url: str
    healthy: bool = False
    attempts: int = 0
    last: str = "not probed"
    seconds: float = 0.0


@dataclass
class HealthReport:
    results: list[UrlHealth]
    via: str
    notes: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(r.healthy for r in self.results)

    def failing(self) -> list[UrlHealth]:
        return [r for r in self.results if not r.healthy]


def _target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _path(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


async def _probe_forwarded(client: httpx.AsyncClient, url: str, local_port: int) -> tuple[bool, str]:
    parts = urlsplit(url)
    local = f"{parts.scheme}://127.0.0.1:{local_port}{_path(url)}"
    try:
        response = await client.get(local, headers={"Host": parts.netloc})
    except httpx.HTTPError as err:
        return False, _describe(err)
    return 200 <= response.status_code < 300, f"HTTP {response.status_code}"


async def _probe_on_host(remote: Remote, url: str) -> tuple[bool, str]:
    result = await remote.run(commands.probe_url(url, PROBE_TIMEOUT), timeout=PROBE_TIMEOUT + 5, check=False)
    code = result.stdout.strip()
    if result.status != 0 or not code.isdigit() or code == "000":
        return False, f"no answer (curl exit {result.status})"
    return code.startswith("2"), f"HTTP {code}"


def _describe(err: httpx.HTTPError) -> str:
    if isinstance(err, httpx.TimeoutException):
        return f"timed out after {PROBE_TIMEOUT}s"
    if isinstance(err, (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)):
        return "connection refused or closed"
    return type(err).__name__


FIRST_PAUSE = 0.25


def probe_pause(attempt: int, interval: float) -> float:
    """Seconds before the next round of probes: 0.25, 0.5, 1 ... up to `interval`. A stack that
    has just started usually answers within a second, so the first rounds come quickly."""
    return float(min(interval, FIRST_PAUSE * 2**attempt))


async def wait_healthy(remote: Remote, urls: Sequence[str], timeout: float, interval: float) -> HealthReport:
    """Poll all URLs until each has answered 2xx once, or the timeout passes."""
    results = [UrlHealth(url) for url in urls]
    start = time.monotonic()
    first_host, first_port = _target(urls[0])
    forwarding = await remote.can_forward(first_host, first_port)
    report = HealthReport(results, "SSH port forward" if forwarding else "curl on the host")
    if not forwarding:
        report.notes.append(
            "the host refuses TCP forwarding (AllowTcpForwarding), so health was probed from the host with curl"
        )
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            httpx.AsyncClient(timeout=PROBE_TIMEOUT, verify=False, follow_redirects=False)
        )
        ports = {}
        if forwarding:
            for target in {_target(u) for u in urls}:
                ports[target] = await stack.enter_async_context(remote.forward(*target))
        attempt = 0
        while True:
            for item in [r for r in results if not r.healthy]:
                item.attempts += 1
                if forwarding:
                    ok, item.last = await _probe_forwarded(client, item.url, ports[_target(item.url)])
                else:
                    ok, item.last = await _probe_on_host(remote, item.url)
                if ok:
                    item.healthy = True
                    item.seconds = time.monotonic() - start
            pause = probe_pause(attempt, interval)
            if report.healthy or time.monotonic() - start + pause > timeout:
                return report
            await asyncio.sleep(pause)
            attempt += 1
