"""The nginx switch and its marker.

    begin (marker holds the previous upstream) → write the target → nginx -t → reload → confirm → commit

The marker, `.bluegreen/switching`, exists only while a switch is unsettled. A run that dies in that
window leaves it, and the next run puts the previous upstream back before it reads the live color:
`nginx -T` reads the disk, so nothing else can tell whether the reload happened."""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from . import commands
from .errors import DeployError
from .journal import STATE_DIR, parse_json
from .nginx import ConfigRejected, Nginx
from .remote import Host


class Switch:
    def __init__(self, host: Host, proxy: Nginx, app_dir: str, name: str) -> None:
        """`name`: the upstream target as the user gave it, for messages."""
        self.host = host
        self.name = name
        self.proxy = proxy
        self.app_dir = app_dir
        self.marker = posixpath.join(app_dir, STATE_DIR, "switching")
        self.stash = proxy.target + ".bluegreen-live"
        self.previous: str | None = None  # set once the target may have been written
        self.reloaded = False  # from here on nginx may serve the new upstream
        self.started_nginx = False  # a first deploy: nginx was started with the new upstream
        self.nginx_stopped = False  # ...and stopped again by undo
        self.settled_canary = False  # the switch a dead run left was a canary's: its log is left to remove

    # -- the upstream file during the checkout ----------------------------------------------------

    @asynccontextmanager
    async def upstream_set_aside(self) -> AsyncIterator[None]:
        """Keep a checkout away from the live upstream file: rename it aside and back (a rename keeps
        the inode, so a single-file bind mount still sees it, and git never overwrites it)."""
        inside = self.proxy.target.startswith(self.app_dir + "/")
        if inside and (await self.host.run(commands.path_exists(self.proxy.target), check=False)).ok:
            await self.host.run(commands.move(self.proxy.target, self.stash))
        try:
            yield
        finally:
            await self.put_back_upstream()

    async def put_back_upstream(self) -> bool:
        """Undo a set-aside that a dead run left; True if there was one."""
        if not (await self.host.run(commands.path_exists(self.stash), check=False)).ok:
            return False
        await self.host.run(commands.move(self.stash, self.proxy.target))
        return True

    # -- an interrupted switch --------------------------------------------------------------------

    async def interrupted(self) -> bool:
        """A dead run's switch is unsettled: its marker is on the host."""
        return (await self.host.run(commands.read_file(self.marker), check=False)).ok

    async def settle_interrupted(self, nginx_running: bool) -> str:
        """Put back the upstream a dead run's switch replaced; returns what was done ("" if nothing)."""
        marker = await self.host.run(commands.read_file(self.marker), check=False)
        if not marker.ok:
            return ""
        record = parse_json(marker.stdout)
        previous = record.get("previous")
        done = ""
        if record.get("first") and nginx_running:
            # a first deploy died once its nginx ran: nothing served before, and nginx cannot load the
            # previous (no) upstream, so the switch stands: nginx serves what that run started it on
            done = f"it was a first deploy and its nginx runs, so that stands (nginx serves {record.get('to')})"
        elif isinstance(previous, str) and nginx_running:
            await self.proxy.restore(previous)
            done = "the upstream it replaced was put back and reloaded"
        elif isinstance(previous, str):
            await self.proxy.write_target(previous)
            done = "the upstream it replaced was put back (nginx is not running)"
        await self.host.run(commands.remove_file(self.marker))
        if share := record.get("canary"):
            self.settled_canary = True
            return f"a previous run died during its canary at {share}%; {done}" if done else ""
        return f"a previous run died during the nginx switch; {done}" if done else ""

    # -- the switch -------------------------------------------------------------------------------

    async def begin(self, previous: str, to: str, run_url: str, *, first: bool = False, canary: int = 0) -> None:
        """Note the upstream being replaced (`previous`, the target's content), on the host first: from
        here a dead run can be undone. `first`: a first deploy, which starts nginx instead of a reload;
        `canary`: the share of a canary's step (noted again at each step)."""
        record: dict[str, object] = {"previous": previous, "to": to, "run": run_url}
        record |= {"first": True} if first else {}
        record |= {"canary": canary} if canary else {}
        await self.host.run(commands.write_state(self.marker), input=json.dumps(record))
        self.previous = previous

    async def begin_back(self, serving: str, run_url: str) -> None:
        """Before a committed switch is undone (a fleet's rollback-all): the marker holds the upstream
        now serving, so a run that dies halfway leaves nginx and the journal agreeing on `serving`."""
        current = await self.proxy.read_target()
        record = {"previous": current, "to": serving, "run": run_url, "back": True}
        await self.host.run(commands.write_state(self.marker), input=json.dumps(record))

    async def reload(self, content: str) -> tuple[set[int], float]:
        """Write the target, nginx -t, reload, confirm; returns the old workers and the reload time."""
        await self.proxy.write_target(content)
        earlier = self.reloaded  # a canary's earlier step may have loaded a split already
        try:
            return await self.proxy.test_and_reload(content, on_reload=self._mark_reloaded)
        except ConfigRejected:
            self.reloaded = earlier  # nginx -t failed before this reload: nginx never loaded this one
            raise

    async def start_nginx(self, content: str, start: Callable[[], Awaitable[None]]) -> float:
        """A first deploy: write the target, then start nginx with `start`, which can only succeed once
        every host its upstreams name exists (on a compose network, the new color's service names)."""
        began = time.monotonic()
        await self.host.run(commands.make_dirs(posixpath.dirname(self.proxy.target)))
        await self.proxy.write_target(content)
        self._mark_reloaded()
        self.started_nginx = True
        await start()
        await self.proxy.wait_loaded(content)
        return time.monotonic() - began

    async def commit(self) -> None:
        await self.host.run(commands.remove_file(self.marker))

    def stands(self) -> None:
        """A committed switch that is never undone (an abort's way back to the old color)."""
        self.previous = None

    async def undo(self, back_to: str, stop_nginx: Callable[[], Awaitable[bool]]) -> str:
        """Put back what the switch replaced (nginx serving `back_to`); returns what was restored, ""
        if nothing was changed."""
        if self.previous is None:
            return ""
        if self.started_nginx:
            self.nginx_stopped = await stop_nginx()
            await self.proxy.write_target(self.previous)
            done = (
                f"nginx stopped again and {self.name} put back: this was the first deploy, nothing served before"
                if self.nginx_stopped
                else f"{self.name} put back, but nginx could not be stopped again: it still serves the new upstream"
            )
        elif self.reloaded:
            await self.proxy.restore(self.previous)
            done = f"nginx upstream switched back to {back_to}, reloaded and confirmed"
        else:
            await self.proxy.write_target(self.previous)
            done = f"upstream file {self.name} put back as it was; nginx never loaded the new one"
        await self.commit()
        return done

    async def check_reachable(self, content: str, upstream: str, target: str, warn: Callable[[str, str], None]) -> None:
        """Never switch to an upstream nginx cannot connect to: every `server` of `content` (the
        upstream file `upstream`) is tried from nginx's own network view before anything is written."""
        unreachable = await self.proxy.unreachable(content)
        if unreachable is None:
            warn(
                f"could not check that nginx reaches the servers of {upstream}: its image has no bash, nc or perl",
                "Upstream servers not checked",
            )
        elif unreachable:
            where = f"in the nginx container {self.proxy.container}" if self.proxy.container else "on the host"
            raise DeployError(
                f"nginx cannot connect to {', '.join(unreachable)} ({upstream}, tried {where}); nothing was reloaded",
                f"point {upstream} at the {target} services as nginx reaches them: compose service names on a shared "
                "network, host ports with the host network",
            )

    def _mark_reloaded(self) -> None:
        self.reloaded = True
