"""The host and a load balancer that keeps connections open: lb-detach-command before a reload of the
host's nginx (its old workers close their idle connections at once, racing the load balancer's
requests), lb-attach-command once the reload is confirmed.

The host is out from the detach's start until the attach has ended: `.bluegreen/detached` says so on
the host meanwhile, so a run that died in between is finished by the next one. In a fleet, no more
hosts are out at once than a batch (config refuses a batch of every host), whatever switches back.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Callable

from . import commands
from .config import Color, Config, label
from .journal import STATE_DIR
from .remote import Host, checked

HURRIED_SECONDS = 5  # a hook's limit once the run is cancelled: the runner kills it soon after


class Balancer:
    def __init__(
        self, host: Host, config: Config, out: Callable[[str, str], None], slots: asyncio.Semaphore | None
    ) -> None:
        self.host = host
        self.cfg = config
        self.out = out  # (label, text): the hook's output, between stop-commands markers
        self.slots = slots
        self.detached = False  # from the detach's start until an attach has ended
        self.hurry = False  # the run was cancelled: hooks get HURRIED_SECONDS
        self._slot = False

    @property
    def active(self) -> bool:
        return bool(self.cfg.lb_detach_command)

    @property
    def name(self) -> str:
        return label(self.cfg.host, self.cfg.port)

    @property
    def state(self) -> str:
        return self.cfg.app_path(posixpath.join(STATE_DIR, "detached"))

    async def left_out(self) -> bool:
        """A run before this one took the host out and never put it back."""
        return (await self.host.run(commands.read_file(self.state), check=False)).ok

    async def detach(self, color: Color | None, *, wait: bool = True) -> bool:
        """Take the host out before a reload; whether it went out. `wait=False` (a recovery): if a
        batch of other hosts is out already, leave it in, since the reload matters more than the race."""
        if not self.active:
            return False
        if self.slots is not None and not self._slot:
            if not wait and self.slots.locked():
                return False
            await self.slots.acquire()
            self._slot = True
        self.detached = True
        await self.host.run(commands.write_state(self.state), input=f"{color or ''}\n")
        await self._run(self.cfg.lb_detach_command, "lb-detach-command", color)
        return True

    async def attach(self, color: Color | None) -> None:
        await self._run(self.cfg.lb_attach_command, "lb-attach-command", color)
        await self.host.run(commands.remove_file(self.state))
        self.detached = False
        self.release()

    async def forget(self) -> None:
        """The hooks are no longer set: a host a run left out is not put back by this one."""
        await self.host.run(commands.remove_file(self.state))

    def release(self) -> None:
        """Free this host's place in the batch of hosts out, unless it may still be out: then it keeps
        the place for good (the fleet ends), so no more hosts are ever out at once than a batch."""
        if self._slot and self.slots is not None and not self.detached:
            self.slots.release()
            self._slot = False

    async def _run(self, argv: tuple[str, ...], name: str, color: Color | None) -> None:
        cfg = self.cfg
        environ = [f"BLUEGREEN_HOST={self.name}", f"BLUEGREEN_COLOR={color or ''}"]
        limit = min(cfg.lb_timeout, HURRIED_SECONDS) if self.hurry else cfg.lb_timeout
        output = await checked(
            self.host,
            ["env", *environ, *argv],
            name,
            f"check {name}: it runs on the host as {cfg.username}, within lb-timeout ({cfg.lb_timeout}s)",
            timeout=limit,
        )
        self.out(f"output of {name}", output)
