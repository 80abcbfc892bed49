"""Health gate: every URL must answer 2xx. Probed with httpx through an SSH port forward, so URLs are
as seen from the host (e.g. http://127.0.0.1:8001/health); from the host with curl if it refuses
forwarding. Then `public-url`, watched through nginx after the switch.

Every probe has a deadline for its whole exchange (connect, headers, everything), and no body is
read: only the status line counts. An endpoint that answers byte by byte, or never, costs a probe
its deadline and no more, and the gate ends at health-timeout whatever the endpoints do."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from . import commands
from .config import PROBE_SECONDS
from .remote import Result

FIRST_PAUSE = 0.25
PUBLIC_URL_EVERY = 0.1  # seconds between probes of public-url after the switch
PUBLIC_URL_DECIDE = 0.3  # failures for this long, with no answer that means up between them, fail

Up = Callable[[int], bool]  # which HTTP statuses mean up


class Tunnel(Protocol):
    """What the gate needs of the host: forwarding, or running curl there."""

    async def can_forward(self, host: str, port: int) -> bool: ...

    def forward(self, host: str, port: int) -> contextlib.AbstractAsyncContextManager[int]: ...

    async def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: int = ..., check: bool = True
    ) -> Result: ...


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


def client(verify: bool = False) -> httpx.AsyncClient:
    """The probes' client; redirects are answers, never followed. It verifies TLS certificates only
    with `verify` (public-url, fetched from the runner): a health URL or host-url goes to the host's
    own ports, where the certificate names the site, not 127.0.0.1. Its own timeouts are a
    backstop; `probe` sets each probe's deadline."""
    return httpx.AsyncClient(timeout=PROBE_SECONDS, verify=verify, follow_redirects=False)


def is_2xx(code: int) -> bool:
    return 200 <= code < 300


async def probe(
    http: httpx.AsyncClient, url: str, seconds: float, host_header: str | None = None, up: Up = is_2xx
) -> tuple[bool, str]:
    """GET `url` and read only its status line, all within `seconds`; (up?, what it answered)."""
    if seconds <= 0:
        return False, "no time left"
    headers = {"Host": host_header} if host_header else None
    try:
        async with asyncio.timeout(seconds), http.stream("GET", url, headers=headers) as response:
            return up(response.status_code), f"HTTP {response.status_code}"
    except TimeoutError:
        return False, f"no answer within {seconds:.1f}s"
    except httpx.ConnectError as err:
        if "CERTIFICATE_VERIFY_FAILED" in str(err):
            return False, "its TLS certificate did not verify"
        return False, "connection refused or closed"
    except (httpx.RemoteProtocolError, httpx.ReadError):
        return False, "connection refused or closed"
    except httpx.HTTPError as err:
        return False, type(err).__name__


async def _probe_on_host(host: Tunnel, url: str, seconds: float, up: Up = is_2xx) -> tuple[bool, str]:
    limit = max(1, math.floor(seconds))
    result = await host.run(commands.probe_url(url, limit), timeout=limit + 5, check=False)
    code = result.stdout.strip()
    if result.status != 0 or not code.isdigit() or code == "000":
        return False, f"no answer (curl exit {result.status})"
    return up(int(code)), f"HTTP {code}"


Check = Callable[[str, float], Awaitable[tuple[bool, str]]]


async def _prober(
    stack: contextlib.AsyncExitStack,
    host: Tunnel | None,
    urls: Sequence[str],
    forwarding: bool,
    up: Up = is_2xx,
    verify: bool = False,
) -> Check:
    """One check for `urls` as seen from `host`: through an SSH port forward per host:port when
    `forwarding`, with curl on the host when not; from here when there is no host (verifying TLS
    with `verify`). `up`: which statuses pass. The forwards live as long as `stack`."""
    http = await stack.enter_async_context(client(verify))
    ports: dict[tuple[str, int], int] = {}
    if host is not None and forwarding:
        for target in {_target(u) for u in urls}:
            ports[target] = await stack.enter_async_context(host.forward(*target))

    async def check(url: str, seconds: float) -> tuple[bool, str]:
        if host is None:
            return await probe(http, url, seconds, up=up)
        if not forwarding:
            return await _probe_on_host(host, url, seconds, up)
        parts = urlsplit(url)
        local = f"{parts.scheme}://127.0.0.1:{ports[_target(url)]}{_path(url)}"
        return await probe(http, local, seconds, parts.netloc, up)

    return check


def probe_pause(attempt: int, interval: float) -> float:
    """Seconds before the next round of probes: 0.25, 0.5, 1 ... up to `interval`. A stack that
    has just started usually answers within a second, so the first rounds come quickly."""
    return float(min(interval, FIRST_PAUSE * 2**attempt))


async def wait_healthy(host: Tunnel, urls: Sequence[str], timeout: float, interval: float) -> HealthReport:
    """Poll all URLs, a round at a time, until each has answered 2xx once; the gate ends at
    `timeout` seconds, whatever the endpoints do."""
    results = [UrlHealth(url) for url in urls]
    start = time.monotonic()
    deadline = start + timeout
    first_host, first_port = _target(urls[0])
    forwarding = await host.can_forward(first_host, first_port)
    report = HealthReport(results, "SSH port forward" if forwarding else "curl on the host")
    if not forwarding:
        report.notes.append(
            "the host refuses TCP forwarding (AllowTcpForwarding), so health was probed from the host with curl"
        )
    async with contextlib.AsyncExitStack() as stack:
        check = await _prober(stack, host, urls, forwarding)

        async def once(item: UrlHealth) -> None:
            seconds = min(PROBE_SECONDS, deadline - time.monotonic())
            item.attempts += 1
            ok, item.last = await check(item.url, seconds)
            if ok:
                item.healthy = True
                item.seconds = time.monotonic() - start

        attempt = 0
        while True:
            await asyncio.gather(*(once(item) for item in results if not item.healthy))
            pause = probe_pause(attempt, interval)
            if report.healthy or time.monotonic() + pause + FIRST_PAUSE > deadline:
                return report  # a round needs time to be worth it: its probes may take FIRST_PAUSE
            await asyncio.sleep(pause)
            attempt += 1


def insecure_public_url(url: str) -> str:
    """The warning every run with public-url-insecure gives."""
    return (
        f"public-url {url} is fetched without verifying its TLS certificate (public-url-insecure: true); a site "
        "with a valid certificate needs no opt-out"
    )


async def watch_public_url(url: str, up: Up, host: Tunnel | None = None, verify: bool = True) -> str:
    """After the switch: probe `url` every 100 ms until it answers as `up` accepts (returns "") or
    fails for PUBLIC_URL_DECIDE seconds with no such answer between (returns what it last answered).
    A probe that hangs counts as a failure after its own deadline, so this ends within a few seconds.
    With `host`, the URL is as seen from that host (host-url): through an SSH port forward, or with
    curl there if the host refuses forwarding, so no other host's answer can pass it; without, it is
    fetched from here (public-url), its TLS certificate verified unless not `verify`."""
    failing_since: float | None = None
    forwarding = host is not None and await host.can_forward(*_target(url))
    async with contextlib.AsyncExitStack() as stack:
        check = await _prober(stack, host, [url], forwarding, up, verify and host is None)
        while True:
            began = time.monotonic()
            ok, last = await check(url, PROBE_SECONDS)
            if ok:
                return ""
            failing_since = failing_since or began
            if time.monotonic() - failing_since >= PUBLIC_URL_DECIDE:
                return last
            await asyncio.sleep(PUBLIC_URL_EVERY)
