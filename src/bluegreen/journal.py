"""The host's record of deploys: `.bluegreen/journal.jsonl` (one JSON line per deploy) and
`.active_env` (the live color, a cache kept for the seed's tools)."""

from __future__ import annotations

import asyncio
import json
import posixpath
import time

from . import commands
from .config import Color
from .remote import Host

STATE_DIR = ".bluegreen"
SWITCHED = ("success", "switched")  # results after which the target color served


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def parse_json(line: str) -> dict[str, object]:
    """A JSON object, or {} for anything else (a torn line, junk)."""
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def parse(text: str) -> list[dict[str, object]]:
    return [entry for entry in map(parse_json, text.splitlines()) if entry]


def last_switch(entries: list[dict[str, object]], to: str | None = None) -> dict[str, object] | None:
    """The newest entry after which its target color (`to`, if given) served."""
    switched = [e for e in entries if e.get("result") in SWITCHED and to in (None, e.get("to"))]
    return switched[-1] if switched else None


def collapse(entries: list[dict[str, object]]) -> list[dict[str, object]]:
    """Entries as a person reads them: a `switched` entry (written when the switch committed) is
    dropped when the same run later recorded its end."""
    ended = {(e.get("run"), e.get("ref")) for e in entries if e.get("result") != "switched"}
    return [e for e in entries if e.get("result") != "switched" or (e.get("run"), e.get("ref")) not in ended]


class Journal:
    def __init__(self, host: Host, app_dir: str) -> None:
        self.host = host
        self.path = posixpath.join(app_dir, STATE_DIR, "journal.jsonl")
        self.active_env = posixpath.join(app_dir, ".active_env")

    async def tail(self, count: int) -> list[dict[str, object]]:
        """The last `count` entries, oldest first."""
        return parse((await self.host.run(["tail", "-n", str(count), self.path], check=False)).stdout)

    async def record(self, entry: dict[str, object], active: Color | None) -> None:
        """Append the entry and, if a color serves, write it to .active_env."""
        writes = [self.host.run(commands.append_file(self.path), input=json.dumps(entry) + "\n")]
        if active:
            writes.append(self.host.run(commands.write_file(self.active_env), input=active + "\n"))
        await asyncio.gather(*writes)
