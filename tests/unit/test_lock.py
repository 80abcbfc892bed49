"""The deploy lock, against a fake host: who holds it is written and shown; a busy lock times out clearly."""

from __future__ import annotations

import asyncio
import json

import pytest

from bluegreen import commands
from bluegreen.config import LOCK_BEAT_SECONDS, LOCK_SILENCE_SECONDS
from bluegreen.errors import DeployError, LockLost
from bluegreen.lock import LAPSE_SECONDS, PROCESS_NONCE, DeployLock, RunInfo, lock_status
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
    assert host.ran(*commands.hold_lock(STATE, 60))
    owner = json.loads(host.files[f"{STATE}/lock.json"])
    assert owner == {
        "repository": "org/app",
        "run_id": "42",
        "attempt": "2",
        "url": RUN.url,
        "started": "2026-11-27T00:00:00Z",
        "nonce": PROCESS_NONCE,
        "token": lock.token,
    }
    held = host.held[0]
    assert not held.released
    assert host.holder == commands.Holder(STATE, "4242 1000")  # every later command is guarded by it
    lock.release()
    assert held.released and lock.held is None and host.holder is None


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


def test_the_run_knows_when_its_lock_may_have_lapsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A paused runner (SIGSTOP, a suspended VM or laptop): after LAPSE_SECONDS without a beat the
    holder may have let go, so the run stops; a holder that ended on the host stops it too."""
    now = [1000.0]
    monkeypatch.setattr("bluegreen.lock.clock", lambda: now[0])
    host = FakeHost()
    lost: list[str] = []
    lock = DeployLock(host, STATE, RUN, print, lost.append)
    asyncio.run(lock.take(10, lambda: ""))
    assert lock.lapse() == "" and host.lapse is not None and host.lapse() == ""
    now[0] += LAPSE_SECONDS - 1
    assert lock.lapse() == ""
    now[0] += 2
    assert lock.lapse() == f"the runner was silent for {LAPSE_SECONDS + 1}s"
    now[0] -= LAPSE_SECONDS
    host.held[0].ended = True
    assert "its holder on the host let go" in lock.lapse()


def test_a_lapse_seen_by_the_watcher_stops_the_run_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bluegreen.lock.LOCK_BEAT_SECONDS", 0.01)
    host = FakeHost()
    lost: list[str] = []
    lock = DeployLock(host, STATE, RUN, print, lost.append)

    async def go() -> None:
        await lock.take(10, lambda: "")
        host.held[0].ended = True
        for _ in range(100):
            if lost:
                return
            await asyncio.sleep(0.01)

    asyncio.run(go())
    assert lost == ["its holder on the host let go (the run's beats stopped reaching it)"]


def test_taking_the_lock_again_after_a_lost_connection_is_refused_if_another_deploy_held_it() -> None:
    host = FakeHost()
    lock = DeployLock(host, STATE, RUN, print)
    asyncio.run(lock.take(10, lambda: ""))
    lock.forget()
    asyncio.run(lock.take(10, lambda: "", again=True))  # nobody held it since: still this run's
    lock.forget()
    host.files[f"{STATE}/lock.json"] = json.dumps({"run_id": "43", "token": "theirs"}) + "\n"
    with pytest.raises(LockLost, match="another deploy held the lock while this run was disconnected"):
        asyncio.run(lock.take(10, lambda: "", again=True))
    assert host.files[f"{STATE}/lock.json"].startswith('{"run_id": "43"')  # their record stands
    assert host.held[-1].released and host.holder is None


def test_a_lock_held_by_this_very_run_fails_fast() -> None:
    """The same machine under two names in one fleet: the second entry's lock is this run's own."""
    owner = json.dumps({"run_id": "42", "nonce": PROCESS_NONCE}) + "\n"
    host = FakeHost(files={f"{STATE}/lock.json": owner}, lock_lines=[""])
    with pytest.raises(DeployError, match="this run already holds the deploy lock on /srv/app") as caught:
        asyncio.run(DeployLock(host, STATE, RUN, print).take(600, lambda: ""))
    assert "list each machine once" in caught.value.fix


def test_status_names_the_holder_only_while_the_lock_is_held() -> None:
    owner = json.dumps({"url": RUN.url, "run_id": "42", "attempt": "2", "started": "t", "token": "x"}) + "\n"
    host = FakeHost(files={f"{STATE}/lock.json": owner})
    host.on(commands.lock_state(STATE)[:3], lambda argv, _: Result(0, "held 4242 1000\n", ""))
    assert asyncio.run(lock_status(host, STATE)) == {
        "held": True,
        "url": RUN.url,
        "run_id": "42",
        "attempt": "2",
        "started": "t",
    }
    host.on(commands.lock_state(STATE)[:3], lambda argv, _: Result(0, "free\n", ""))
    assert asyncio.run(lock_status(host, STATE)) == {"held": False}


def test_a_reconnect_that_finds_its_own_lost_session_still_holding_the_lock_says_so() -> None:
    """sshd keeps the dead session, and a command of it still runs: the lock is this run's own, not
    another deploy's, and the error says that."""
    host = FakeHost()
    lock = DeployLock(host, STATE, RUN, print)
    asyncio.run(lock.take(10, lambda: ""))
    lock.forget()
    host.lock_lines = [""]  # the old session's holder still has it
    with pytest.raises(DeployError, match="this run's own lost SSH session still holds the lock") as caught:
        asyncio.run(lock.take(0, lambda: "", again=True))
    assert "ClientAliveInterval" in caught.value.fix


def test_status_says_held_while_a_holder_lets_go() -> None:
    host = FakeHost()
    host.on(commands.lock_state(STATE)[:3], lambda argv, _: Result(0, "held letting-go\n", ""))
    assert asyncio.run(lock_status(host, STATE))["letting-go"] is True
    assert asyncio.run(lock_status(host, STATE))["held"] is True
