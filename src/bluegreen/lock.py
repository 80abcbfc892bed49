"""The deploy lock: one deploy at a time per app-dir.

An flock held by a process of the action's own SSH session, for exactly as long as that session
lives: the kernel drops it when the session ends (released, cancelled, killed, or the link lost), so
no run can leave a lock behind, and no clock ever takes it from a run that is still going (however
long its migration runs). Waiters say who holds it."""

from __future__ import annotations

import asyncio
import json
import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from . import commands
from .config import LOCK_BEAT_SECONDS, LOCK_SILENCE_SECONDS
from .errors import DeployError
from .remote import Holding, Host, last_line

RETRY_SECONDS = 2
NOTE_SECONDS = 10


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
    def __init__(self, host: Host, state_dir: str, run: RunInfo, info: Callable[[str], None]) -> None:
        self.host = host
        self.state_dir = state_dir
        self.run = run
        self.info = info
        self.file = posixpath.join(state_dir, "lock")
        self.owner_file = posixpath.join(state_dir, "lock.json")
        self.held: Holding | None = None
        self._beats: asyncio.Task[None] | None = None

    async def take(self, timeout: int, now: Callable[[], str]) -> None:
        """Wait up to `timeout` seconds for the lock, saying every 10 s who holds it."""
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
            process = await self.host.start(commands.hold_lock(self.file, LOCK_SILENCE_SECONDS))
            word, _, pid = (await process.first_line()).partition(" ")
            if word == "locked":
                self.held = process
                self._beats = asyncio.create_task(self._beat(process))
                self.host.tie_to(int(pid) if pid.isdigit() else None)
                owner = {**asdict(self.run), "started": now()}
                await self.host.run(commands.write_state(self.owner_file), input=json.dumps(owner) + "\n")
                return
            process.release()
            if time.monotonic() >= deadline:
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

    async def _beat(self, held: Holding) -> None:
        """While the lock is held: tell its holder on the host that this run is alive."""
        while True:
            await asyncio.sleep(LOCK_BEAT_SECONDS)
            held.beat()

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
