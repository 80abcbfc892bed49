"""The deploy lock, against a fake host: who holds it is written and shown; a busy lock times out clearly."""

from __future__ import annotations

import asyncio
import json

import pytest

from bluegreen import commands
from bluegreen.config import LOCK_BEAT_SECONDS, LOCK_SILENCE_SECONDS
from bluegreen.errors import DeployError
from bluegreen.lock import DeployLock, RunInfo
from bluegreen.remote import Result

from .fakes import FakeHost

STATE = "/srv/app/.bluegreen"
RUN = RunInfo("org/app", "42", "2", "https://github.com/org/app/actions/runs/42")


def test_run_info_from_the_runner_environment() -> None:
    env = {
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "org/app",
        "GITHUB_RUN_ID": "42",
        "GITHUB_RUN_ATTEMPT": "2",
    }
    assert RunInfo.from_env(env) == RUN
    assert RunInfo.from_env({}) == RunInfo()


def test_taking_the_lock_records_its_owner_and_release_ends_the_holder() -> None:
    host = FakeHost()
    lock = DeployLock(host, STATE, RUN, print)
    asyncio.run(lock.take(10, lambda: "2026-11-27T00:00:00Z"))
    assert host.calls[0] == commands.make_state_dir(STATE)
    assert host.ran(*commands.hold_lock(f"{STATE}/lock", 60))
    owner = json.loads(host.files[f"{STATE}/lock.json"])
    assert owner == {
        "repository": "org/app",
        "run_id": "42",
        "attempt": "2",
        "url": RUN.url,
        "started": "2026-11-27T00:00:00Z",
    }
    held = host.held[0]
    assert not held.released
    lock.release()
    assert held.released and lock.held is None


def test_a_lock_still_held_after_the_timeout_names_its_owner() -> None:
    host = FakeHost(files={f"{STATE}/lock.json": '{"run_id": "41"}\n'}, lock_lines=[""])
    notes: list[str] = []
    lock = DeployLock(host, STATE, RUN, notes.append)
    with pytest.raises(
        DeployError, match=r'still holds the lock on /srv/app after 0s \(owner: \{"run_id": "41"\}\)'
    ) as caught:
        asyncio.run(lock.take(0, lambda: ""))
    assert "concurrency:" in caught.value.fix
    assert host.held[0].released and lock.held is None


def test_a_held_lock_beats_until_released_and_has_no_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder on the host lets go only when the beats stop or the session ends: while this run
    lives it beats, whatever its steps take (a day-long migration included)."""
    monkeypatch.setattr("bluegreen.lock.LOCK_BEAT_SECONDS", 0.01)
    host = FakeHost()
    lock = DeployLock(host, STATE, RUN, print)

    async def go() -> int:
        await lock.take(10, lambda: "")
        held = host.held[0]
        await asyncio.sleep(0.2)
        beats = held.beats
        lock.release()
        await asyncio.sleep(0.05)
        assert held.beats == beats  # no beat after release
        return beats

    assert asyncio.run(go()) >= 5
    assert LOCK_SILENCE_SECONDS >= 6 * LOCK_BEAT_SECONDS  # a few lost beats never drop the lock


def test_a_state_folder_that_is_a_symlink_is_refused_with_its_fix() -> None:
    host = FakeHost()
    host.on(commands.make_state_dir(STATE)[:3], lambda argv, _: Result(3, "", f"{STATE} is a symlink or a file\n"))
    with pytest.raises(
        DeployError, match="is a symlink or a file: the action keeps its lock and journal there"
    ) as caught:
        asyncio.run(DeployLock(host, STATE, RUN, print).take(10, lambda: ""))
    assert "git rm -r --cached .bluegreen" in caught.value.fix and host.held == []
