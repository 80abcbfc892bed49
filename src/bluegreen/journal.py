"""The host's record of deploys: `.bluegreen/journal.jsonl` (one JSON line per deploy) and
`.active_env` (the live color, a cache kept for the seed's tools).

A record is appended as a line of its own (a newline first if a lost connection tore the last one),
and read back record by record: a torn line costs only itself, never the records after it."""

from __future__ import annotations

import asyncio
import json
import posixpath
import time

from . import commands
from .config import Color
from .remote import Host

STATE_DIR = ".bluegreen"
SWITCHED_BACK = "switched-back"  # a fleet's rollback-all put this host back on the color it served before
SWITCHED = ("success", "switched", SWITCHED_BACK)  # results after which the target color served

Entry = dict[str, object]
_DECODER = json.JSONDecoder()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def parse_json(line: str) -> Entry:
    """A JSON object, or {} for anything else (a torn line, junk)."""
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def records(line: str) -> list[Entry]:
    """The JSON objects of one journal line: one, or, where a record was glued onto a torn one (an
    earlier release appended without a newline first), the whole object that ends the line."""
    if whole := parse_json(line):
        return [whole]
    for start in (i for i, char in enumerate(line) if char == "{" and i > 0):
        try:
            value, end = _DECODER.raw_decode(line, start)
        except ValueError:
            continue
        if isinstance(value, dict) and not line[end:].strip():
            return [value]
    return []


def parse(text: str) -> list[Entry]:
    return [entry for line in text.splitlines() for entry in records(line)]


ADOPTED = "adopted"  # a color the action found serving and took over: its containers, the commit unverified


def last_switch(entries: list[Entry], to: str | None = None, *, adopted: bool = False) -> Entry | None:
    """The newest entry after which its target color (`to`, if given) served; with `adopted`, an
    adoption counts too. A switch that a fleet undid (a later switched-back entry) does not count."""
    results = (*SWITCHED, ADOPTED) if adopted else SWITCHED
    served: list[Entry] = []
    for entry in entries:
        if entry.get("result") == SWITCHED_BACK:  # the switch it undid never served for long: forget it
            undid = (entry.get("run"), entry.get("undid"))
            served = [e for e in served if e is not _last_of(served, undid)]
        if entry.get("result") in results:
            served.append(entry)
    switched = [e for e in served if to in (None, e.get("to"))]
    return switched[-1] if switched else None


def _last_of(entries: list[Entry], run_ref: tuple[object, object]) -> Entry | None:
    matching = [e for e in entries if e.get("result") == "switched" and (e.get("run"), e.get("ref")) == run_ref]
    return matching[-1] if matching else None


def collapse(entries: list[Entry]) -> list[Entry]:
    """Entries as a person reads them: a `switched` entry (written when the switch committed) is
    dropped when the same run later recorded its end."""
    ended = {(e.get("run"), e.get("ref")) for e in entries if e.get("result") != "switched"}
    return [e for e in entries if e.get("result") != "switched" or (e.get("run"), e.get("ref")) not in ended]


class Journal:
    def __init__(self, host: Host, app_dir: str) -> None:
        self.host = host
        self.path = posixpath.join(app_dir, STATE_DIR, "journal.jsonl")
        self.active_env = posixpath.join(app_dir, ".active_env")

    async def tail(self, count: int) -> list[Entry]:
        """The last `count` entries, oldest first."""
        return parse((await self.host.run(["tail", "-n", str(count), self.path], check=False)).stdout)

    async def record(self, entry: Entry, active: Color | None) -> None:
        """Append the entry and, if a color serves, write it to .active_env."""
        writes = [self.host.run(commands.append_line(self.path), input=json.dumps(entry) + "\n")]
        if active:
            writes.append(self.host.run(commands.write_state(self.active_env), input=active + "\n"))
        await asyncio.gather(*writes)
