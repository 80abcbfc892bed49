"""The deploy lock, against a fake host: who holds it is written and shown; a busy lock times out clearly."""

from __future__ import annotations

import asyncio
import json

import pytest

from bluegreen import commands
from bluegreen.errors import DeployError
from bluegreen.lock import DeployLock, RunInfo

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
    assert host.ran(*commands.hold_lock(f"{STATE}/lock"))
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
