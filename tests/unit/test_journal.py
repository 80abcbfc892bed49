"""The journal and .active_env, against a fake host."""

from __future__ import annotations

import asyncio
import json

from bluegreen.journal import Journal, collapse, last_switch, parse

from .fakes import FakeHost

PATH = "/srv/app/.bluegreen/journal.jsonl"


def test_parse_skips_torn_and_foreign_lines() -> None:
    text = '{"result": "success", "to": "blue"}\n{"result": "fai\n[1, 2]\n\n{"result": "failed", "to": "green"}\n'
    assert parse(text) == [{"result": "success", "to": "blue"}, {"result": "failed", "to": "green"}]


def test_a_record_glued_onto_a_torn_line_is_still_read() -> None:
    """An earlier release appended without a newline first: a connection lost mid-append left a torn
    line, and the next record was glued onto it. Every complete record after it is still read."""
    switched = {"time": "t2", "ref": "b" * 40, "to": "green", "result": "switched", "steps": {"build": 1.5}}
    torn = '{"time": "t1", "ref": "aaaa", "to": "blue", "steps": {"connect": 0.1'
    text = "\n".join([json.dumps({"result": "success", "to": "blue"}), torn + json.dumps(switched), '{"result"'])
    assert parse(text + "\n") == [{"result": "success", "to": "blue"}, switched]
    assert last_switch(parse(text), "green") == switched


def test_an_append_after_a_torn_line_starts_a_line_of_its_own() -> None:
    host = FakeHost(files={PATH: '{"result": "success"}\n{"result": "swi'})
    asyncio.run(Journal(host, "/srv/app").record({"result": "switched", "to": "blue"}, "blue"))
    assert host.files[PATH] == '{"result": "success"}\n{"result": "swi\n{"result": "switched", "to": "blue"}\n'
    assert parse(host.files[PATH]) == [{"result": "success"}, {"result": "switched", "to": "blue"}]


def test_the_last_switch_is_the_newest_entry_after_which_its_target_served() -> None:
    entries: list[dict[str, object]] = [
        {"result": "success", "to": "blue"},
        {"result": "switched", "to": "green"},
        {"result": "failed", "to": "blue"},
    ]
    assert last_switch(entries) == {"result": "switched", "to": "green"}
    assert last_switch(entries, "blue") == {"result": "success", "to": "blue"}  # the failed one never served
    assert last_switch([{"result": "failed"}]) is None
    assert last_switch([]) is None


def test_record_appends_a_line_and_writes_active_env() -> None:
    host = FakeHost(files={PATH: '{"result": "success"}\n'})
    journal = Journal(host, "/srv/app")
    asyncio.run(journal.record({"result": "switched", "to": "blue"}, "blue"))
    assert [json.loads(line) for line in host.files[PATH].splitlines()] == [
        {"result": "success"},
        {"result": "switched", "to": "blue"},
    ]
    assert host.files["/srv/app/.active_env"] == "blue\n"
    assert asyncio.run(journal.tail(1)) == [{"result": "switched", "to": "blue"}]


def test_record_without_a_serving_color_leaves_active_env() -> None:
    host = FakeHost()
    asyncio.run(Journal(host, "/srv/app").record({"result": "failed"}, None))
    assert "/srv/app/.active_env" not in host.files and host.files[PATH] == '{"result": "failed"}\n'


def test_a_runs_switched_entry_is_shown_only_until_its_end_is_recorded() -> None:
    entries: list[dict[str, object]] = [
        {"run": "r1", "ref": "a", "result": "switched"},
        {"run": "r1", "ref": "a", "result": "success"},
        {"run": "r2", "ref": "b", "result": "switched"},
    ]
    assert collapse(entries) == entries[1:]
