"""The fleet: every host of `host`, deployed as one, all or nothing.

    every host at once:  connect → preflight → lock → live color → sync → base → build → health
    then, batch by batch (batch-size):  pre-switch → switch → host-url   (the earlier batches' host-url again)
    once every host has switched:  public-url → on every host: drain → retire old → record

Each host runs the one-host deploy (`deploy.Deployer`) on its own connection, lock and journal; the
fleet only decides when each may switch (`turn`) and whether a switched host stays (`switched`). A
failure anywhere before the whole fleet has switched ends the fleet: with on-host-failure
rollback-all, every host that switched goes back to the color it still runs (the old color is only
retired once every host has switched, so going back is a reload, no build); with stop, switched
hosts stay and the rest are left as they were. A fleet of one host is today's deploy: its one batch
switches as soon as it is healthy.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from .canary import Judge
from .config import Config, label
from .deploy import Deployer
from .errors import FleetStopped, describe
from .health import insecure_public_url, watch_public_url
from .images import Shared
from .lock import RunInfo
from .report import FleetReport, HostReporter, Reporter


@dataclass(eq=False)
class Member:
    label: str
    deployer: Deployer
    go: asyncio.Future[None] = field(init=False)  # made in Fleet.run, on its loop
    hold: asyncio.Future[None] = field(init=False)
    waiting: bool = False  # healthy, waiting for its batch
    holding: bool = False  # switched, waiting for the rest of the fleet
    done: bool = False
    task: asyncio.Task[object] | None = None


class Fleet:
    def __init__(self, config: Config, out: Reporter, run: RunInfo) -> None:
        self.cfg = config
        self.out = out
        many = len(config.hosts) > 1
        self.members: list[Member] = []
        for index, (host, port) in enumerate(config.hosts):
            name = label(host, port)
            reporter = HostReporter(out, name) if many else out
            self.members.append(Member(name, Deployer(config.for_host(index), reporter, run, self)))
        size = config.batch_count()
        self.batches = [self.members[i : i + size] for i in range(0, len(self.members), size)]
        self.changed = asyncio.Event()
        self.lb_slots = asyncio.Semaphore(size)  # hosts out of the load balancer at once: a batch at most
        self.failure: tuple[str, str] | None = None  # (host, what failed): the first failure ends the fleet
        self.error = ""  # a failure of the fleet itself (public-url once every host switched)
        self.driver: asyncio.Task[None] | None = None
        self.back: dict[Member, str] = {}  # hosts that switch back whatever on-host-failure says: their own cause
        self.shared = Shared.of(config)  # one digest per tag, one build per service, for every host (images.py)
        self.canary = Judge(config.canary, len(self.batches[0]))  # strategy: canary: the first batch's judge

    def member(self, deployer: Deployer) -> Member:
        return next(m for m in self.members if m.deployer is deployer)

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def stopping(self) -> bool:
        return all(m.deployer.stopping for m in self.members)

    # -- what each host's deploy calls ------------------------------------------------------------

    async def turn(self, deployer: Deployer) -> None:
        """Wait until this host's batch may switch; FleetStopped if the fleet failed first."""
        me = self.member(deployer)
        self.stop_if_failed(me)
        me.waiting = True
        self.notify()
        try:
            await me.go
        finally:
            me.waiting = False
        self.stop_if_failed(me)  # a host of the same batch may have failed first

    def still_on(self, deployer: Deployer) -> None:
        """Just before this host switches: FleetStopped if the fleet failed meanwhile."""
        self.stop_if_failed(self.member(deployer))

    async def switched(self, deployer: Deployer) -> None:
        """This host switched: wait until the fleet has, or FleetStopped to switch back."""
        me = self.member(deployer)
        me.holding = True
        self.notify()
        try:
            await me.hold
        finally:
            me.holding = False

    def judge(self, deployer: Deployer) -> Judge | None:
        """The judge of this host's canary: the first batch's, which sums its hosts' counts; the later
        batches switch directly once the first batch was promoted."""
        return self.canary if self.member(deployer) in self.batches[0] else None

    def failed(self, deployer: Deployer, error: BaseException) -> None:
        """A host failed (or was cancelled): the first failure ends the fleet."""
        if isinstance(error, asyncio.CancelledError):
            self.fail("the run", "the run was cancelled (SIGINT/SIGTERM)")
        elif not isinstance(error, FleetStopped):
            me = self.member(deployer)
            self.fail(me.label, f"{me.label} failed at {deployer.report.failed_step or 'start'}: {error}")
        self.halt_before_gate()
        if self.failure is not None and len(self.members) > 1:  # the first batch's canary ends with it
            who, what = self.failure
            self.canary.stop(FleetStopped(what, who, "", switched=False))
        self.notify()

    def fail(self, who: str, what: str) -> None:
        if self.failure is None:
            self.failure = (who, what)

    def stop_if_failed(self, me: Member) -> None:
        if self.failure is not None and len(self.members) > 1:
            raise self.stopped(me, switched=False)

    def stopped(self, me: Member, *, switched: bool) -> FleetStopped:
        assert self.failure is not None
        if switched and me in self.back:  # its own host-url failed: that is its cause
            return FleetStopped(self.back[me], me.label, me.label, switched=True)
        why = "on-host-failure is rollback-all, so " if switched else ""
        return FleetStopped(self.failure[1], self.failure[0], me.label, switched=switched, why=why)

    def halt_before_gate(self) -> None:
        """The fleet failed: every host still before its gate (connecting, syncing, building,
        health-checking) stops at once, into its recovery, so no new color starts anywhere after the
        failure. A host already released to switch goes on to `switched`, where settle decides."""
        if self.failure is None or len(self.members) == 1:
            return
        for m in self.members:
            task, deployer = m.task, m.deployer
            if task is None or m.done or m.waiting or m.holding or m.go.done() or deployer.stopping:
                continue
            if deployer.halted is None and not task.cancelling():
                deployer.halted = self.stopped(m, switched=False)
                task.cancel()

    # -- the driver -------------------------------------------------------------------------------

    def notify(self) -> None:
        self.changed.set()

    async def until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            self.changed.clear()
            await self.changed.wait()

    async def drive(self) -> None:
        try:
            await self.until(lambda: self.failure is not None or all(m.waiting or m.done for m in self.members))
            if self.failure is None and (differ := self.images_differ()):
                self.fail("the fleet", differ)
            for number, batch in enumerate(self.batches):
                if self.failure is not None:
                    break
                if number == 0:  # hosts that already run the commit make no canary
                    self.canary.size = sum(m.waiting and not m.deployer.report.already_live for m in batch)
                for m in batch:
                    if m.waiting and not m.go.done():
                        m.go.set_result(None)
                await self.until(lambda: all(m.holding or m.done for m in batch))  # noqa: B023
                if self.failure is None and number + 1 < len(self.batches):
                    await self.recheck([m for b in self.batches[: number + 1] for m in b if m.holding])
            fleet_url = self.cfg.public_url if self.failure is None and len(self.members) > 1 else ""
            if fleet_url and self.cfg.public_url_insecure:
                self.out.warning(insecure_public_url(fleet_url), "TLS not verified")
            if fleet_url and (
                last := await watch_public_url(fleet_url, self.cfg.site_up, verify=not self.cfg.public_url_insecure)
            ):
                answers = self.cfg.site_answers
                self.error = f"public-url {fleet_url} did not answer {answers} once every host switched (last: {last})"
                self.failure = ("public-url", self.error)
        except asyncio.CancelledError:
            self.fail("the run", "the run was cancelled (SIGINT/SIGTERM)")
        except Exception as err:  # a host's probe that broke (a lost connection): a failure like any
            self.fail("the fleet", f"checking the switched hosts failed: {err}")
        finally:
            self.settle()

    def images_differ(self) -> str:
        """Every host healthy, none switched yet: each image must be the same on every host that got
        it (a tag that moved between two hosts' pulls, with pull: missing or never, gives two). Keyed
        by the image as the compose files name it; compared by the digest the registry served when
        every host has one (an image id differs between docker's image stores), or by id (one image
        may be known by two digests). What differs, in words; "" if nothing does. A host that was
        already live got no images."""
        seen: dict[str, dict[str, list[str]]] = {}  # image -> id -> hosts
        digests: dict[str, list[str]] = {}  # image -> each host's digest ("" for none)
        for m in self.members:
            for record in m.deployer.report.images:
                seen.setdefault(record.image, {}).setdefault(record.id, []).append(m.label)
                digests.setdefault(record.image, []).append(record.digest.rpartition("@")[2])
        same_digest = {image for image, found in digests.items() if "" not in found and len(set(found)) == 1}
        problems = [
            f"{image}: " + ", ".join(f"{'/'.join(hosts)} {key.rpartition(':')[2][:12]}" for key, hosts in found.items())
            for image, found in seen.items()
            if len(found) > 1 and image not in same_digest
        ]
        if not problems:
            return ""
        return (
            "the hosts would serve different images, so none switched ("
            + "; ".join(problems)
            + f"): a host kept an older image under the tag (pull: {self.cfg.pull}); set pull: always and rerun, "
            "or name the image by digest"
        )

    async def recheck(self, switched: list[Member]) -> None:
        """Between batches: every host switched so far must still answer host-url."""
        url = self.cfg.host_url
        if not url:
            return
        answers = await asyncio.gather(*(m.deployer.watch_host_url() for m in switched), return_exceptions=True)
        for m, last in zip(switched, answers, strict=True):
            if last:
                cause = f"{m.label}: host-url {url} stopped answering {self.cfg.site_answers} (last: {last})"
                self.back[m] = cause  # whatever on-host-failure says: host-url failing switches a host back
                self.fail(m.label, cause)

    def settle(self) -> None:
        """The fleet is decided: release every waiting host, to switch or to stop."""
        every = self.failure is not None and self.cfg.on_host_failure == "rollback-all" and len(self.members) > 1
        for m in self.members:
            if not m.hold.done():
                if every or m in self.back:
                    m.hold.set_exception(self.stopped(m, switched=True))
                else:
                    m.hold.set_result(None)
            if not m.go.done():
                if self.failure is not None:
                    m.go.set_exception(self.stopped(m, switched=False))
                else:
                    m.go.set_result(None)
        for m in self.members:  # a future nobody awaits must not warn
            for future in (m.go, m.hold):
                if future.done() and not future.cancelled():
                    future.exception()

    # -- the run ----------------------------------------------------------------------------------

    async def run(self) -> FleetReport:
        async def one(m: Member) -> None:
            try:
                await m.deployer.run()
            except Exception as err:  # a bug, not a host's failure: still a failure of the fleet
                m.deployer.report.error = m.deployer.report.error or f"unexpected error: {describe(err)}"
                self.failed(m.deployer, err)
                raise

        def finished(m: Member) -> None:
            m.done = True
            if m.task is not None and m.task.cancelled():  # cancelled before it started
                if m.deployer.halted is not None:  # another host failed first
                    m.deployer.report.error = m.deployer.report.error or str(m.deployer.halted)
                else:
                    m.deployer.report.error = m.deployer.report.error or "the run was cancelled (SIGINT/SIGTERM)"
                    self.fail("the run", "the run was cancelled (SIGINT/SIGTERM)")
            self.notify()

        loop = asyncio.get_running_loop()
        for m in self.members:
            m.go, m.hold = loop.create_future(), loop.create_future()
        for m in self.members:
            m.task = asyncio.create_task(one(m))
            m.task.add_done_callback(lambda _, m=m: finished(m))  # type: ignore[misc]
        self.driver = asyncio.create_task(self.drive())
        tasks: list[asyncio.Task[object]] = [m.task for m in self.members if m.task is not None]
        while True:
            try:
                await asyncio.wait(tasks)
                break
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                self.interrupt()
        self.notify()
        try:
            await asyncio.wait([self.driver])
        finally:
            self.shared.close()
        for task in tasks:
            if not task.cancelled() and (err := task.exception()) is not None:
                self.out.error(f"unexpected error: {describe(err)}", "Deploy failed")
        return self.report()

    def interrupt(self, sig: signal.Signals | None = None) -> None:
        """SIGINT/SIGTERM: every host still deploying goes to its recovery; a host that switched waits
        for the fleet's decision (rollback-all switches it back). A signal during recovery is noted."""
        name = sig.name if sig is not None else "a cancel"
        for m in self.members:  # the runner kills the job soon: load balancer hooks from here get little time
            m.deployer.hurry()
        if not self.stopping:
            self.fail("the run", "the run was cancelled (SIGINT/SIGTERM)")
        for m in self.members:
            if m.done:
                continue
            if m.deployer.stopping:
                m.deployer.warn(
                    f"{name} came while the action was leaving the host consistent; it finished that first",
                    "Signal during recovery",
                )
            elif not m.holding and m.task is not None and not m.task.cancelling():
                m.task.cancel()
        if self.driver is not None and not self.driver.done():
            self.driver.cancel()

    def report(self) -> FleetReport:
        return FleetReport(
            [(m.label, m.deployer.report) for m in self.members],
            error=self.error,
            on_host_failure=self.cfg.on_host_failure,
            failed_host=self.failure[0] if self.failure else "",
        )


async def deploy_with_signals(fleet: Fleet) -> FleetReport:
    """Run a deploy; SIGINT or SIGTERM cancels it into the recovery path. GitHub's runner sends
    SIGINT, then SIGTERM 7.5 s later: the first starts the recovery, and no later one interrupts it
    (or the report after it)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, fleet.interrupt, sig)
    report = await fleet.run()
    fleet.out.finish(report)
    return report
