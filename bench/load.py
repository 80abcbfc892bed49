"""Constant load through nginx for the benchmark: keep-alive GETs at a steady rate, plus long (3 s)
requests always in flight. A raw HTTP/1.1 client, so that what happens on the wire can be told apart:

- a GET on a *reused* keep-alive connection that closes before any response byte is retried once on
  a new connection, as browsers do (RFC 9112 §9.3.1); those are counted as `retried` and
  `keepalive_resets`, and only a failed retry counts as failed;
- anything else that is not a 2xx answer (an error status, a timeout, a refused or reset
  connection, a close mid-response) is a failed request; for long requests it is a cut one.

Loopback only: the target must be http://127.0.0.1:<port>."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field

TIMEOUT = 15.0


class NoResponse(Exception):
    """The connection closed or reset before the first response byte."""


@dataclass
class Counts:
    ok: int = 0
    failed: int = 0
    retried: int = 0
    keepalive_resets: int = 0
    long_ok: int = 0
    long_cut: int = 0
    errors: list[str] = field(default_factory=list)
    first_seen: dict[str, float] = field(default_factory=dict)

    def saw(self, body: bytes) -> None:
        """Remember when each version was first served."""
        try:
            version = json.loads(body)["version"]
        except (ValueError, KeyError):
            return
        self.first_seen.setdefault(version, time.monotonic())


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
        self.used = 0

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None and self.writer is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n".encode())
        try:
            await self.writer.drain()
            status_line = await self.reader.readline()
        except (ConnectionResetError, BrokenPipeError) as err:
            raise NoResponse(str(err)) from None
        if not status_line:
            raise NoResponse("closed")
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = (await self.reader.readline()).strip()
            if not line:
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        body = await self.reader.readexactly(length)
        self.used += 1
        if close:
            await self.close()
        return status, body


class Load:
    """Runs on its own thread and event loop while a deploy happens on the main thread."""

    def __init__(
        self,
        port: int,
        rate: float = 100.0,
        connections: int = 4,
        long_in_flight: int = 4,
        long_path: str = "/slow?s=3",
        path: str = "/api/v1/",
    ) -> None:
        self.port = port
        self.path = path
        self.interval = connections / rate
        self.connections = connections
        self.long_in_flight = long_in_flight
        self.long_path = long_path
        self.counts = Counts()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT + 10)

    async def _main(self) -> None:
        await asyncio.gather(
            *[self._steady() for _ in range(self.connections)], *[self._long() for _ in range(self.long_in_flight)]
        )

    async def _request(self, conn: Connection, path: str) -> tuple[int, bytes]:
        reused = conn.used > 0
        try:
            return await asyncio.wait_for(conn.get(path), TIMEOUT)
        except NoResponse:
            await conn.close()
            if not reused:
                raise
            self.counts.keepalive_resets += 1
            self.counts.retried += 1
            return await asyncio.wait_for(conn.get(path), TIMEOUT)

    async def _steady(self) -> None:
        conn = Connection(self.port)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status, body = await self._request(conn, self.path)
                if 200 <= status < 300:
                    self.counts.ok += 1
                    self.counts.saw(body)
                else:
                    self.counts.failed += 1
                    self.counts.errors.append(f"HTTP {status}")
            except (TimeoutError, OSError, NoResponse, asyncio.IncompleteReadError, ValueError, IndexError) as err:
                self.counts.failed += 1
                self.counts.errors.append(f"{type(err).__name__}: {err}")
                await conn.close()
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        await conn.close()

    async def _long(self) -> None:
        while not self._stop.is_set():
            conn = Connection(self.port)
            try:
                status, _ = await conn.get(self.long_path)
                error = "" if 200 <= status < 300 else f"long: HTTP {status}"
            except (OSError, NoResponse, asyncio.IncompleteReadError, ValueError, IndexError) as err:
                error = f"long: {type(err).__name__}: {err}"
            await conn.close()
            if not error:
                self.counts.long_ok += 1
                continue
            self.counts.long_cut += 1
            self.counts.errors.append(error)
            await asyncio.sleep(0.1)  # a refused long request must not spin
