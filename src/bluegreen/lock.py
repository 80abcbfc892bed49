"""The deploy lock: one deploy at a time per app-dir, and a run that knows it holds it.

An flock held by a process of the action's own SSH session (commands.HOLD_LOCK_SCRIPT), for as long
as that session lives and the run's beats reach it: the kernel drops it when the holder ends
(released, cancelled, killed, the link lost, or the beats silent for LOCK_SILENCE_SECONDS), so no run
can leave a lock behind, and no clock takes it from a run that is still going (however long its
migration runs). Every command of the run runs only while its holder holds the lock, and the holder
lets go only once they have all ended (commands.GUARD_SCRIPT). The run watches the lock too: once
its holder ended, or the run was silent long enough that it may have lapsed (a paused runner), the
run sends nothing more (remote.Remote.check_lock) and stops. Waiters say who holds it."""

from __future__ import annotations

import asyncio
import json
import os
import posixpath
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

from . import commands
from .config import LOCK_BEAT_SECONDS, LOCK_SILENCE_SECONDS
from .errors import DeployError, LockLost
from .journal import parse_json
from .remote import Holding, Host, last_line

RETRY_SECONDS = 2
NOTE_SECONDS = 10
# A run this long without a beat may have lost its lock: the holder lets go after LOCK_SILENCE_SECONDS
# of silence, and the last beat may have taken a beat's time to arrive.
LAPSE_SECONDS = LOCK_SILENCE_SECONDS - LOCK_BEAT_SECONDS
PROCESS_NONCE = uuid.uuid4().hex  # this run (every host of a fleet): a lock it holds already is its own


def clock() -> float:
    """Seconds that keep counting while this machine sleeps (a suspended laptop or VM), unlike monotonic."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):
        return time.monotonic()


@dataclass(frozen=True)
class RunInfo:
    """Who runs this deploy, from the GITHUB_* variables; recorded in the lock and the journal."""

    repository: str = ""
    run_id: str = ""
    attempt: str = ""
    url: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str]) -> RunInfo:
        server, repo, run = (
            env.get("GITHUB_SERVER_URL", ""),
            env.get("GITHUB_REPOSITORY", ""),
            env.get("GITHUB_RUN_ID", ""),
        )
        url = f"{server}/{repo}/actions/runs/{run}" if server and repo and run else ""
        return cls(repo, run, env.get("GITHUB_RUN_ATTEMPT", ""), url)


class DeployLock:
    def __init__(
        self,
        host: Host,
        state_dir: str,
        run: RunInfo,
        info: Callable[[str], None],
        on_lost: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.host = host
        self.state_dir = state_dir
        self.run = run
        self.info = info
        self.on_lost = on_lost  # told once the lock is gone, or may be, while the run holds it
        self.file = posixpath.join(state_dir, "lock")
        self.owner_file = posixpath.join(state_dir, "lock.json")
        self.token = uuid.uuid4().hex  # this lock's taker: a later take sees whether another held it since
        self.held: Holding | None = None
        self.last_beat = 0.0
        self._beats: asyncio.Task[None] | None = None

    async def take(self, timeout: int, now: Callable[[], str], *, again: bool = False) -> None:
        """Wait up to `timeout` seconds for the lock, saying every 10 s who holds it. `again`: this run
        held it before and lost its connection; if another deploy held it since, LockLost."""
        made = await self.host.run(commands.make_state_dir(self.state_dir), check=False)
        if made.status == commands.NOT_OURS:
            raise DeployError(
                f"{last_line(made.stderr)}: the action keeps its lock and journal there and never opens them through "
                "a link",
                f"make {self.state_dir} a plain folder: remove the symlink (and any link in it), and if the "
                f"repository tracks it, git rm -r --cached {posixpath.basename(self.state_dir)}",
            )
        if not made.ok:
            raise DeployError(
                f"creating {self.state_dir} failed: {last_line(made.stderr)}",
                "make app-dir writable by the deploy user",
            )
        deadline = time.monotonic() + timeout
        last_note = 0.0
        while True:
            process = await self.host.start(commands.hold_lock(self.state_dir, LOCK_SILENCE_SECONDS))
            word, _, token = (await process.first_line()).partition(" ")
            if word == "locked":
                self.held, self.last_beat = process, clock()
                self._beats = asyncio.create_task(self._beat(process))
                self.host.tie_to(commands.Holder(self.state_dir, token), self.lapse)
                if again and (await self.owner_record()).get("token") != self.token:
                    self.release()
                    raise LockLost(
                        posixpath.dirname(self.state_dir),
                        "another deploy held the lock while this run was disconnected",
                    )
                owner = {**asdict(self.run), "started": now(), "nonce": PROCESS_NONCE, "token": self.token}
                await self.host.run(commands.write_state(self.owner_file), input=json.dumps(owner) + "\n")
                return
            process.release()
            if not again and (await self.owner_record()).get("nonce") == PROCESS_NONCE:
                raise DeployError(
                    f"this run already holds the deploy lock on {posixpath.dirname(self.state_dir)}: two entries "
                    "of host are the same machine",
                    "list each machine once in host",
                )
            if time.monotonic() >= deadline:
                if again and (await self.owner_record()).get("token") == self.token:
                    raise DeployError(
                        f"this run's own lost SSH session still holds the lock on "
                        f"{posixpath.dirname(self.state_dir)} after {timeout}s: a command it started still runs "
                        "on the host (sshd keeps a dead session open)",
                        "rerun the job once that command has ended; set ClientAliveInterval in the host's sshd_config "
                        "so that dead sessions end sooner",
                    )
                raise DeployError(
                    f"another deploy still holds the lock on {posixpath.dirname(self.state_dir)} after {timeout}s "
                    f"(owner: {await self.owner() or 'unknown'})",
                    "wait for it to finish, or raise lock-timeout; use concurrency: in the workflow to queue deploys",
                )
            if time.monotonic() - last_note >= NOTE_SECONDS:
                self.info(f"waiting for the deploy lock, held by {await self.owner() or 'another deploy'}")
                last_note = time.monotonic()
            await asyncio.sleep(RETRY_SECONDS)

    async def owner(self) -> str:
        return (await self.host.run(commands.read_file(self.owner_file), check=False)).stdout.strip()

    async def owner_record(self) -> dict[str, object]:
        return parse_json(await self.owner())

    def lapse(self) -> str:
        """Why the lock may no longer be this run's ("" while it surely is): its holder on the host
        ended, or the run was silent long enough for the holder to let go."""
        if self.held is None:
            return ""
        if self.held.exited():
            return "its holder on the host let go (the run's beats stopped reaching it)"
        silent = clock() - self.last_beat
        return f"the runner was silent for {silent:.0f}s" if silent >= LAPSE_SECONDS else ""

    async def _beat(self, held: Holding) -> None:
        """While the lock is held: tell its holder on the host that this run is alive, and tell the
        run at once when the lock is gone (or may be)."""
        while True:
            await asyncio.sleep(LOCK_BEAT_SECONDS)
            if reason := self.lapse():
                self._beats = None
                self.on_lost(reason)
                return
            held.beat()
            self.last_beat = clock()

    def release(self) -> None:
        if self.held is not None:
            self.held.release()
        self.forget()

    def forget(self) -> None:
        """The connection that held it is gone, and the lock with it."""
        if self._beats is not None:
            self._beats.cancel()
            self._beats = None
        self.held = None
        self.host.tie_to(None)


async def lock_status(host: Host, state_dir: str) -> dict[str, object]:
    """`status`: whether the deploy lock is held, and by which run (as it recorded itself)."""
    state = (await host.run(commands.lock_state(state_dir), check=False)).stdout.strip()
    held = state.startswith("held ")
    owner = await host.run(commands.read_file(posixpath.join(state_dir, "lock.json")), check=False) if held else None
    record = parse_json(owner.stdout) if owner is not None else {}
    recorded: dict[str, object] = {k: record[k] for k in ("url", "run_id", "attempt", "started") if k in record}
    if state == "held letting-go":  # its holder is gone and waits for (or left) its run's last commands
        recorded["letting-go"] = True
    return {"held": held, **recorded}
