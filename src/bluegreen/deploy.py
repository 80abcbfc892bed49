"""The deploy orchestrator: the seed's steps, in its order, with the failure path beside them.

    deploy:   connect → preflight → lock → live color → sync → images → base → build → health → pre-switch
              → [canary] → switch → drain → retire old → record
    rollback: connect → preflight → lock → live color → plan → checkout → start kept → health → switch
              → drain → retire old → record
    promote:  connect → preflight → lock → live color (a held canary) → switch → drain → retire old → record
    abort:    connect → preflight → lock → live color (a held canary) → switch back → drain → remove new → record

Each family of work lives in its own module: `preflight` (what the host has, the live color),
`sync` (refs and the checkout), `images` (pulled from a registry), `stacks` (the base and the
colors: whose containers, start, build, stop), `rollback` (what to roll back to), `switch` (the
nginx switch and its marker), `lock`, `journal`, `health`. Any failure before the switch is
committed tears the target color down and leaves (or puts back) the previous upstream; the base is
never restarted.
"""

from __future__ import annotations

import asyncio
import math
import shlex
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from . import commands, rollback
from .balancer import Balancer
from .canary import Canary, CanaryLog, Held, Judge, held_path
from .config import (
    CANCEL_DRAIN_SECONDS,
    RECONNECT_LOCK_SECONDS,
    STOP_GRACE_MIN_SECONDS,
    TEARDOWN_STOP_SECONDS,
    Color,
    Config,
    KeepPrevious,
    other_color,
)
from .errors import DeployError, FleetStopped, LockLost, describe
from .health import insecure_public_url, wait_healthy, watch_public_url
from .images import Images, Shared
from .journal import STATE_DIR, SWITCHED, SWITCHED_BACK, Entry, Journal, collapse, last_switch, now
from .lock import DeployLock, RunInfo
from .nginx import Nginx, NginxError
from .preflight import HostFacts, Preflight
from .remote import CommandFailed, Remote, RemoteError, checked
from .report import Report, Reporter, StepRecord
from .stacks import Files, Stacks, check_files
from .switch import Switch
from .sync import Checkout, relative_to

LOG_TAIL = 50
PRE_SWITCH_TAIL = 20  # lines of pre-switch-command's output in the job summary
JOURNAL_LOOKBACK = 200  # entries read: what each color last served, and the summary's recent deploys
Part = Nginx | Switch | DeployLock | Journal | Stacks | Checkout | Preflight | Balancer | Images | CanaryLog
RETIRE_TITLE = {"stopped": "Stop", "running": "Keep running:", "none": "Stop and remove"}


def use_host(stacks: Stacks, facts: HostFacts) -> None:
    """What preflight found on the host, for the stacks: its Compose, a first deploy's nginx service,
    and app-dir as the host resolves it."""
    stacks.variant, stacks.nginx_service = facts.compose, facts.nginx_service
    stacks.app_dirs = (stacks.cfg.app_dir, facts.app_dir)


async def use_commit(
    git: Checkout, stacks: Stacks, preflight: Preflight, sha: str, target: Color, earlier: Sequence[str]
) -> Files:
    """Make the stacks' compose files at `sha` their layout (with those of the `earlier` commits the
    host ran), once checked; returns them. Changes nothing on the host."""
    cfg = stacks.cfg
    current, before = await git.stack_files(sha, target, earlier)
    check_files(current, before, cfg, target, sha, pre_switch=cfg.command == "deploy")
    stacks.use_files(current, before)
    await stacks.check_project_is_ours()
    if stacks.nginx_service:  # a first deploy: nginx is the base service that makes it, at this commit
        stacks.nginx_service = preflight.nginx_service_in(current["base"])
    return current


def own_files(app_dir: str, upstream_target: str) -> set[str]:
    """The tracked files the action itself writes, which a checkout may overwrite: the live upstream
    file `upstream_target` (set aside meanwhile) and .active_env."""
    return {p for p in (relative_to(app_dir, upstream_target), ".active_env") if p}


def earlier_commits(head: str, journal: list[Entry], sha: str) -> list[str]:
    """The commits the host ran before `sha`: what is checked out, and what each color last served."""
    refs = [head, *(str((last_switch(journal, c) or {}).get("ref", "")) for c in ("blue", "green"))]
    return [ref for ref in dict.fromkeys(refs) if ref and ref != sha]


class Gate(Protocol):
    """The fleet this host's deploy is part of (`fleet.Fleet`): when it may switch, whether it stays."""

    @property
    def size(self) -> int: ...

    async def turn(self, deployer: Deployer) -> None: ...

    async def switched(self, deployer: Deployer) -> None: ...

    def failed(self, deployer: Deployer, error: BaseException) -> None: ...

    def still_on(self, deployer: Deployer) -> None: ...

    @property
    def lb_slots(self) -> asyncio.Semaphore: ...

    @property
    def shared(self) -> Shared: ...

    def judge(self, deployer: Deployer) -> Judge | None: ...


class Deployer:
    def __init__(self, config: Config, out: Reporter, run: RunInfo, fleet: Gate | None = None) -> None:
        self.fleet = fleet
        self.switched_back = False  # the fleet failed after this host switched: it goes back (rollback-all)
        self.cancelled = False  # a signal ended the steps: recovery keeps to the runner's cancel window
        self.cfg = config
        self.out = out
        self.run_info = run
        self.report = Report(ref=config.ref)
        self.remote: Remote | None = None
        self.stopping = False  # the steps are over (done, failed or cancelled): signals no longer interrupt
        self.target_touched = False
        self.checked_out = False  # the checkout changed: a failure from here is recorded in the journal
        self.committed = False
        self.switched_entry: Entry = {}
        self.journal_tail: list[Entry] | None = None  # the journal's last entries, oldest first
        self.head = ""  # the commit checked out before this run changed anything
        self.target_ids: list[str] = []  # the target color's containers, recorded when it serves
        self.started_ids: list[str] = []  # a rollback: kept containers it started, stopped again on failure
        self.checkout_back = ""  # a rollback: the commit to check out again if it fails before the switch
        self.report.command = config.command
        self.task: asyncio.Task[object] | None = None  # the run's own task: a lost lock stops it at once
        self.lost_reason = ""  # why the lock's watcher stopped the steps: the run no longer holds the lock
        self.halted: FleetStopped | None = None  # another host failed while this one was before its gate
        self.recovery_error = ""  # why the recovery did not finish, if it did not
        self.held: Held | None = None  # a canary that an earlier run left held on this host

    def attach(self, remote: Remote) -> None:
        """Make the step modules, on this connection."""
        cfg = self.cfg
        self.remote = remote
        self.proxy = Nginx(remote, cfg.nginx_container, cfg.upstream_target_path, cfg.nginx_sudo)
        self.switch = Switch(remote, self.proxy, cfg.app_dir, cfg.upstream_target)
        self.lock = DeployLock(remote, cfg.app_path(STATE_DIR), self.run_info, self.out.info, self.lost_lock)
        self.journal = Journal(remote, cfg.app_dir)
        self.stacks = Stacks(remote, cfg, self.out.info)
        self.git = Checkout(remote, cfg)
        self.preflight = Preflight(remote, cfg, self.proxy, self.out.info, self.warn)
        self.lb = Balancer(remote, cfg, self.out.host_output, self.fleet.lb_slots if self.fleet else None)
        shared = self.fleet.shared if self.fleet else Shared.of(cfg)
        self.images = Images(remote, cfg, self.stacks, self.out.info, shared, self.report.images)
        self.canary: Canary | None = None  # strategy: canary, once its steps begin
        self.canary_log = CanaryLog(remote, cfg)

    def parts(self) -> tuple[Part, ...]:
        return (self.proxy, self.switch, self.lock, self.journal, self.stacks, self.git, self.preflight, self.lb,
                self.images, self.canary_log)  # fmt: skip

    @property
    def host(self) -> Remote:
        assert self.remote is not None
        return self.remote

    @asynccontextmanager
    async def step(self, name: str, title: str) -> AsyncIterator[StepRecord]:
        record = StepRecord(name, title)
        self.report.steps.append(record)
        start = time.monotonic()
        try:
            with self.out.group(title):
                try:
                    yield record
                    record.status = "ok"
                except BaseException:
                    record.status = "failed"
                    self.report.failed_step = title
                    raise
                finally:
                    record.seconds = time.monotonic() - start
        finally:
            self.out.step_done(record)

    # -- the deploy -------------------------------------------------------------------------------

    async def run(self) -> Report:
        self.task = asyncio.current_task()
        try:
            try:
                await self.steps()
            finally:
                self.stopping = True  # from here, recovery and the report run to the end, whatever signal comes
        except LockLost as err:
            self.lock_gone(err)
        except asyncio.CancelledError as err:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if self.lost_reason:  # the lock's watcher stopped the steps
                self.lock_gone(LockLost(self.cfg.app_dir, self.lost_reason))
            elif self.halted is not None:  # the fleet failed elsewhere: this host stops where it is
                self.fail(str(self.halted), self.halted.fix)
                await self.recover()
            else:
                self.cancelled = True
                self.hurry()
                if self.fleet is not None:
                    self.fleet.failed(self, err)
                self.fail(
                    "the run was cancelled (SIGINT/SIGTERM)",
                    "rerun the job: a rerun deploys the same commit and resumes from any state",
                )
                await self.recover()
        except (DeployError, RemoteError, NginxError, CommandFailed) as err:
            if isinstance(err, DeployError) and err.output:
                self.out.host_output(f"output of {err.what}", err.output)
            if self.fleet is not None:
                self.fleet.failed(self, err)
            if isinstance(err, FleetStopped) and err.switched:  # said once the recovery shows what happened
                await self.recover()
                self.fail(*self.after_switch_back(err))
            else:
                self.fail(str(err), getattr(err, "fix", ""))
                await self.recover()
        except Exception as err:  # a bug, or a failure no step expected: recovered from like any other
            if self.fleet is not None:
                self.fleet.failed(self, err)
            self.fail(
                f"unexpected error: {describe(err)}",
                "rerun the job: a rerun deploys the same commit and resumes from any state; report this error",
            )
            await self.recover()
        finally:
            await self.close()
        return self.report

    def lost_lock(self, reason: str) -> None:
        """The lock's watcher: the lock is gone, or may be. The steps stop at once (nothing more is
        sent to the host: remote.Remote.check_lock); recovery, which would change the host, never runs."""
        self.lost_reason = self.lost_reason or reason
        if not self.stopping and self.task is not None and not self.task.done():
            self.task.cancel()

    def lock_gone(self, err: LockLost) -> None:
        """A lost lock ends the run where it is: another deploy may own the host, so this run neither
        recovers nor records; it says what it left."""
        if self.fleet is not None:
            self.fleet.failed(self, err)
        self.fail(str(err), err.fix)
        self.report.unfinished = "the deploy lock was lost, so nothing was recovered"
        self.report.restored.append(
            "nothing: this run no longer holds the deploy lock, so it left the host as it was"
            + (f" (it had reached '{self.report.failed_step}')" if self.report.failed_step else "")
        )
        self.mark_uncertain()
        if self.remote is not None and self.lb.detached:
            self.report.restored.append(
                f"{self.lb.name} may still be out of the load balancer (lb-detach-command ran): "
                "put it back once the host serves"
            )

    def mark_uncertain(self) -> None:
        """The lock was lost between the upstream's write and the commit (or while undoing it): what
        nginx serves is not known, and the report says so instead of naming a color."""
        if self.remote is not None and self.switch.previous is not None and not self.committed:
            new: str = self.report.target or ""
            if self.cfg.command == "abort" and self.held is not None:  # an abort's switch goes the other way
                new = f"{self.held.live} alone or still the split"
            self.report.uncertain = (
                f"nginx may serve {new}: the lock was lost during the switch, and the next deploy "
                "settles it from the switch marker"
            )

    async def steps(self) -> None:
        cfg = self.cfg
        async with self.step("connect", f"Connect to {cfg.username}@{cfg.host}:{cfg.port}") as s:
            if cfg.public_url and cfg.public_url_insecure:
                self.warn(insecure_public_url(cfg.public_url), "TLS not verified")
            if cfg.insecure_skip_host_key_check:
                self.warn(
                    "the host key is not checked (insecure-skip-host-key-check: true); pin it with known-hosts or "
                    "fingerprint",
                    "Host key not checked",
                )
            self.attach(await Remote.connect(cfg))
            s.detail = "host key verified" if not cfg.insecure_skip_host_key_check else "host key NOT checked"
        async with self.step("preflight", "Check the host"):
            facts = await self.preflight.check_host()
            use_host(self.stacks, facts)
        async with self.step("lock", "Take the deploy lock"):
            await self.lock.take(cfg.lock_timeout, now)
        async with self.step("live", "Find the live color") as s:
            left_by_a_run = await self.out_for_settling()
            self.held = Held.parse((await self.host.run(commands.read_file(held_path(self.cfg)), check=False)).stdout)
            live, self.journal_tail, self.head = await asyncio.gather(
                self.preflight.live_color(self.switch, not self.stacks.nginx_service, self.held),
                self.journal.tail(JOURNAL_LOOKBACK),
                self.git.head(),
            )
            if self.lb.detached:
                await self.lb.attach(live)
            if left_by_a_run:
                self.warn(f"a previous run left {self.lb.name} out of the load balancer: put back", "Host put back")
            if self.switch.settled_canary or cfg.strategy == "canary" or cfg.command in ("promote", "abort"):
                await self.canary_log.remove()  # one a dead run left: no canary runs while this run holds the lock
            await self.forget_stale_hold(live)
            self.report.live = live
            self.report.target = target = other_color(live) if live else "blue"
            self.report.first_deploy = bool(self.stacks.nginx_service)
            s.detail = f"nginx serves {live}" if live else "nginx serves neither color yet"
            if self.report.first_deploy:
                s.detail = "first deploy: nginx is not running yet"
        if cfg.command in ("promote", "abort"):
            await self.finish_canary()
            return
        if self.held is not None and self.held_by_this_run():
            return
        if cfg.command == "rollback":
            await self.rollback_steps()
            return
        async with self.step("sync", f"Sync {cfg.ref}") as s:
            await self.git.fetch()
            resolved = await self.git.resolve(cfg.ref)
            self.report.sha = resolved.sha
            s.detail = f"{resolved.how} at {resolved.sha[:12]}" if resolved.how != "commit" else resolved.sha[:12]
            await self.use_commit(resolved.sha)
            await self.checkout(resolved.sha)
        if await self.already_live():
            return
        if self.images.wanted(target):
            async with self.step("images", f"Get {target}'s images") as s:
                await self.stacks.write_env(target, self.warn)
                s.detail = await self.images.get(target, self.report.sha)
        if cfg.base_compose_file:
            async with self.step("base", "Bring up the base stack") as s:
                s.detail = await self.stacks.base_up()
        async with self.step("build", f"Build and start {target}"):
            self.target_touched = True
            await self.stacks.write_env(target, self.warn)
            await self.stacks.build(target, here=cfg.build == "host")
            self.target_ids = [c.id for c in await self.stacks.of(target, refresh=True)]
        async with self.step("health", f"Health-check {target}") as s:
            await self.health_gate(target, s)
        await self.wait_turn()
        if cfg.pre_switch_command:
            service, _ = cfg.pre_switch_for(target)
            async with self.step("pre-switch", f"Run pre-switch-command in {service}") as s:
                await self.pre_switch(target, s)
        await self.switch_and_retire(target)

    async def switch_and_retire(self, target: Color) -> None:
        """Switch, drain, then treat the color that served before as keep-previous says, and record."""
        cfg = self.cfg
        self.still_on()
        if judge := self.canary_judge():
            steps = " → ".join(f"{share}%" for share in cfg.canary.steps) + (" (then held)" if cfg.canary.hold else "")
            async with self.step("canary", f"Canary {target}: {steps}") as s:
                s.detail = await self.run_canary(target, judge)
            if cfg.canary.hold:
                await self.hold_canary(target)
                return
        async with self.step("switch", f"Switch nginx to {target}") as s:
            old_workers = await self.switch_to(target, s)
        await self.hold_for_fleet()
        if old_workers:
            async with self.step("drain", "Drain old nginx workers") as s:
                drained = await self.drain(old_workers, s)
        else:
            drained = 0.0  # a first deploy: no nginx served before
        if old := self.report.live:
            async with self.step("stop", f"{RETIRE_TITLE[cfg.keep_previous]} {old}") as s:
                s.detail = await self.retire(old, cfg.drain_timeout - drained)
        async with self.step("record", "Record the deploy"):
            await self.record("success")
            if self.held is not None:  # promoted: kept until now, so a fleet that switches back holds again
                await self.host.run(commands.remove_file(held_path(self.cfg)))
                self.report.held = 0
        if cfg.prune:
            async with self.step("prune", "Prune what this run replaced") as s:
                try:
                    s.detail = self.report.pruned = await self.stacks.prune()
                except RemoteError as err:  # the deploy stands; pruning waits for the next one
                    self.warn(f"pruning did not finish: {err}", "Prune incomplete")

    # -- the canary (canary.py) --------------------------------------------------------------------

    def canary_judge(self) -> Judge | None:
        """strategy: canary, for a deploy that replaces a serving color (a first deploy has nothing to
        compare with); in a fleet, only its first batch (the fleet's judge sums their counts)."""
        cfg = self.cfg
        if cfg.strategy != "canary" or cfg.command != "deploy":
            return None
        judge = self.fleet.judge(self) if self.fleet is not None else Judge(cfg.canary)
        if judge is not None and (not self.report.live or self.stacks.nginx_service):
            judge.leave()  # the rest of its batch must not wait for this host's counts
            return None
        return judge

    async def run_canary(self, target: Color, judge: Judge) -> str:
        """The canary's steps, each through the switch's path (marker, lb hooks, nginx -t, confirmed
        reload); DeployError if one is aborted, and recovery switches back as after a failed switch."""
        cfg, live = self.cfg, self.report.live
        assert live is not None
        new, current, dump = await asyncio.gather(self.upstream_of(target), self.proxy.read_target(), self.proxy.dump())
        self.canary = canary = Canary(cfg, judge, self.canary_log, self.out.info, self.warn)
        await canary.check(current, new, live, dump)
        await self.switch.check_reachable(new, cfg.upstream_file_for(target), target, self.warn)

        async def mark(share: int) -> None:
            await self.switch.begin(current, target, self.run_info.url, canary=share)

        try:
            await canary.run(current, new, self.reload, mark)
        finally:
            self.report.canary = judge.results
        return f"{len(judge.results)} steps passed"

    async def reload(self, content: str, color: Color | None = None) -> set[int]:
        """A reload as the switch makes it, out of the load balancer meanwhile (its hooks are told
        `color`, the color nginx goes to: the target's unless given); the workers it replaced."""
        color = color or self.report.target
        await self.lb.detach(color)
        replaced, _ = await self.switch.reload(content)
        if self.lb.detached:
            await self.lb.attach(color)
        return replaced

    async def hold_canary(self, target: Color) -> None:
        """canary-steps ends in hold: the last split stays (without the log), the switch is settled,
        and a later promote or abort finishes it."""
        assert self.canary is not None and self.report.live is not None and self.switch.previous is not None
        share = self.cfg.canary.steps[-1]
        async with self.step("canary-hold", f"Hold the canary at {share}%") as s:
            new = await self.upstream_of(target)
            split = self.canary.split(self.switch.previous, new, share, log=False)
            await self.reload(split)
            await self.canary_log.remove()
            s.detail = f"{share}% of requests go to {target}: finish with command: promote or abort"
        await self.hold_for_fleet(switched=False)  # a fleet holds on every host, or every host goes back
        self.held = Held(self.report.live, target, self.report.sha, share, split, self.switch.previous,
                         self.run_info.url, now(), self.cfg.ref)  # fmt: skip
        await self.host.run(commands.write_state(held_path(self.cfg)), input=self.held.record())
        await self.switch.commit()  # from here a dead run leaves the canary held, as recorded
        self.report.held = share
        await self.record("held")

    async def forget_stale_hold(self, live: Color | None) -> None:
        """A held canary whose split nginx no longer serves: promoted by a run that died before it
        removed the record (nginx serves the new color), it is over, and so it is for a deploy,
        which replaces the idle color anyway. Otherwise (an abort that died after its way back, the
        split edited by hand) an abort finishes it, and a promote or rollback is refused."""
        held = self.held
        if held is None or self.preflight.split_loaded or self.stacks.nginx_service:
            return
        if live != held.target and self.cfg.command != "deploy":
            if self.cfg.command == "abort":
                return
            raise DeployError(
                f"nginx no longer serves the split of the canary of {held.ref[:12]} (an abort that did not finish, or "
                f"an edit by hand), and its new color {held.target} may still run",
                "finish it with command: abort (it switches nginx back to the old color and removes the new)",
            )
        await self.host.run(commands.remove_file(held_path(self.cfg)))
        self.out.info("a held canary's record was left, but nginx no longer serves its split: forgotten")
        self.held = None

    def held_by_this_run(self) -> bool:
        """A deploy or rollback while a canary is held is refused, but a rerun of the run that held it:
        that one is done already."""
        assert self.held is not None
        held = self.held
        if held.run and held.run == self.run_info.url and self.cfg.command == "deploy" and self.cfg.ref == held.asked:
            self.report.target, self.report.sha, self.report.held = held.target, held.ref, held.share
            self.out.info(f"this run already holds its canary of {held.ref[:12]} at {held.share}%; nothing to do")
            return True
        raise DeployError(
            f"a canary of {held.ref[:12]} holds {held.share}% of requests on {held.target} (since {held.since}"
            + (f", {held.run}" if held.run else "")
            + f"), so a {self.cfg.command} would replace it unjudged",
            "finish it first: run the action with command: promote or command: abort",
        )

    async def finish_canary(self) -> None:
        """promote: switch to the held canary's new color as a deploy does. abort: switch back to the
        old color's upstream, drain, and remove the new color."""
        held, cfg = self.held, self.cfg
        promoted = last_switch(self.journal_tail or []) or {}
        if held is None and cfg.command == "promote" and self.report.live and promoted.get("command") == "promote":
            # a promote that died once its switch was committed, or is run again: finish what is left
            self.report.sha = str(promoted.get("ref", ""))
            self.report.target, self.report.already_live = self.report.live, True
            await self.use_commit(self.head)
            await self.finish_earlier_switch(self.report.live)
            return
        last = (self.journal_tail or [{}])[-1]
        if (
            held is None
            and cfg.command == "abort"
            and last.get("result") == "aborted"
            and last.get("to") == self.report.live
        ):
            # this host's abort is done (a fleet's rerun, where another host's abort failed)
            self.report.sha = str(last.get("ref", ""))
            self.report.target, self.report.already_live = self.report.live, True
            self.out.info(
                f"the canary of {self.report.sha[:12]} was aborted on this host already; {self.report.live} serves"
            )
            return
        if held is None:
            raise DeployError(
                f"no canary is held on this host, so there is nothing to {cfg.command}",
                "use command: promote or abort after a deploy whose canary-steps end in hold; status shows one",
            )
        self.report.live, self.report.target, self.report.sha = held.live, held.target, held.ref
        self.report.held = held.share  # until its record goes
        await self.use_commit(self.head)
        self.target_ids = [c.id for c in await self.stacks.of(held.target)]
        await self.wait_turn()
        if cfg.command == "promote":  # the held color may have been held for hours: healthy still?
            async with self.step("health", f"Health-check {held.target}") as s:
                await self.health_gate(held.target, s)
            await self.switch_and_retire(held.target)
            return
        if self.stacks.nginx_service:
            raise DeployError(
                f"nginx is not running, so the abort cannot switch it back to {held.live} and confirm it",
                "start nginx (it serves the held split again) and rerun the abort",
            )
        async with self.step("switch", f"Switch nginx back to {held.live}") as s:
            # whatever nginx serves now: the split, or (an abort that died after its way back, an edit by
            # hand) something else; the old color's upstream is loaded and confirmed in every case
            await self.switch.begin(await self.proxy.read_target(), held.live, self.run_info.url)
            old_workers = await self.reload(held.previous, held.live)
            await self.switch.commit()
            self.switch.stands()  # the way back: a failure from here leaves it, never the split again
            self.report.rolled_back, self.report.held = True, 0
            s.detail = f"{held.live} serves every request again"
        async with self.step("drain", "Drain old nginx workers") as s:
            drained = await self.drain(old_workers, s)
        async with self.step("stop", f"Stop and remove {held.target}") as s:
            s.detail = (
                f"{await self.retire(held.target, cfg.drain_timeout - drained, 'none')}; {held.live} keeps serving"
            )
        self.target_ids = [c.id for c in await self.stacks.of(held.live)]
        self.report.target = held.live  # the journal: this run left the old color serving
        async with self.step("record", "Record the abort"):
            await self.record("aborted")
            await self.host.run(commands.remove_file(held_path(cfg)))  # last: a rerun of a dead abort finishes it

    async def after_canary(self) -> None:
        """An aborted canary, switched back: the split's workers finish their requests to the new
        color before it stops, and the log goes."""
        assert self.canary is not None
        if self.canary.aborted_at:
            back = time.monotonic() - self.canary.aborted_at
            self.report.restored.append(f"every request went back to {self.report.live} {back:.2f}s after the verdict")
        await self.canary_log.remove()
        await self.drain_in_recovery()

    async def drain_in_recovery(self) -> None:
        """The workers that sent requests to the target finish them (inside the runner's cancel window
        if cancelled), before the target stops."""
        window = min(self.cfg.drain_timeout, CANCEL_DRAIN_SECONDS if self.cancelled else 3600)
        drained, left = await self.proxy.drain(await self.proxy.shutting_down(), window)
        self.report.restored.append(
            f"nginx workers that served {self.report.target} drained in {drained:.1f}s"
            + (f" ({left} still busy when the drain ended)" if left else "")
        )

    async def rollback_steps(self) -> None:
        """Back to the color that served before, at the commit it ran: its kept containers, no build."""
        if done := rollback.rerun_of_a_rollback(self.journal_tail or [], self.run_info.url, self.report.live):
            self.report.already_live = True
            self.report.sha = str(done.get("ref", ""))
            self.out.info(f"this run already rolled back to {done.get('to')} at {self.report.sha[:12]}; not again")
            await self.use_commit(self.head)
            await self.finish_earlier_switch(self.report.live or "blue")
            return
        async with self.step("plan", "Find what to roll back to") as s:
            nginx_missing = self.cfg.nginx_container if self.report.first_deploy else ""
            plan = await rollback.plan(
                self.journal_tail or [], self.report.live, nginx_missing, self.stacks, self.use_commit
            )
            self.report.target, self.report.sha, self.report.adopted = plan.target, plan.sha, plan.adopted
            s.detail = f"{plan.target} at {plan.sha[:12]}"
        async with self.step("sync", f"Check out {plan.sha[:12]}"):
            self.checkout_back = plan.back
            await self.checkout(plan.sha)
        async with self.step("start", f"Start {plan.target}") as s:
            # noted before the start: a start that fails (or is cancelled) partway is stopped again too
            self.started_ids = self.stacks.stopped(plan.containers)
            await self.stacks.start(self.started_ids)
            self.target_ids = [c.id for c in plan.containers]
            s.detail = f"started {len(self.started_ids)} kept containers" if self.started_ids else "already running"
        async with self.step("health", f"Health-check {plan.target}") as s:
            await self.health_gate(plan.target, s)
        await self.wait_turn()
        await self.switch_and_retire(plan.target)

    # -- the fleet --------------------------------------------------------------------------------

    @property
    def in_fleet(self) -> bool:
        return self.fleet is not None and self.fleet.size > 1

    async def wait_turn(self) -> None:
        """Healthy: wait for this host's batch (every host is built and healthy before any switches).
        A host alone has no one to wait for."""
        if not self.in_fleet:
            return
        assert self.fleet is not None
        async with self.step("turn", "Wait for the fleet: every host healthy, then this host's batch") as s:
            started = time.monotonic()
            await self.fleet.turn(self)
            s.detail = f"waited {time.monotonic() - started:.1f}s"

    async def hold_for_fleet(self, *, switched: bool = True) -> None:
        """Switched: the old color keeps running until every host has switched, so going back (if
        another host fails) is a reload; FleetStopped makes this host switch back in `recover`.
        `switched=False`: a host that made no switch (already live) only waits for the decision."""
        if not self.in_fleet:
            return
        assert self.fleet is not None
        try:
            async with self.step("hold", "Wait for the rest of the fleet to switch") as s:
                started = time.monotonic()
                await self.fleet.switched(self)
                s.detail = f"waited {time.monotonic() - started:.1f}s"
        except (DeployError, asyncio.CancelledError):
            if switched:
                self.switched_back = True
                self.committed = False  # recovery undoes the switch: the old color still runs
                if self.cfg.command == "deploy":
                    self.checkout_back = self.head
            raise

    def still_on(self) -> None:
        """Just before the switch: a host of a fleet that failed meanwhile does not switch."""
        if self.in_fleet:
            assert self.fleet is not None
            self.fleet.still_on(self)

    async def watch_host_url(self) -> str:
        """host-url, as seen on this host: "" once it answers up, else what it last answered."""
        return await watch_public_url(self.cfg.host_url, self.cfg.site_up, self.host) if self.cfg.host_url else ""

    async def record_switched_back(self) -> None:
        """The journal: the live color serves again, and the switch this run made does not count."""
        live = self.report.live
        known = last_switch(self.journal_tail or [], live, adopted=True) or {}
        entry = {
            **self.journal_entry(SWITCHED_BACK),
            "ref": str(known.get("ref", "")),  # unknown rather than a guess: a rerun never takes it for live
            "from": self.report.target,
            "to": live,
            "undid": self.report.sha,
            "containers": [c.id for c in await self.stacks.of(live)] if live else [],
        }
        await self.journal.record(entry, live)

    # -- steps ------------------------------------------------------------------------------------

    async def use_commit(self, sha: str) -> None:
        """Make the stacks' compose files at `sha` their layout (with those of the commits the host ran
        before), once checked. Changes nothing on the host."""
        target = self.report.target
        assert target is not None
        earlier = earlier_commits(self.head, self.journal_tail or [], sha)
        await use_commit(self.git, self.stacks, self.preflight, sha, target, earlier)

    async def checkout(self, sha: str) -> None:
        """Check `sha` out, once nothing the host owns is in its way; the live upstream file is set
        aside meanwhile, so git never sees it."""
        set_aside = relative_to(self.cfg.app_dir, self.proxy.target)
        await self.git.check_host_files(sha, set_aside)
        await self.check_out(sha)

    async def check_out(self, sha: str) -> None:
        """The host's changes to tracked files dealt with as host-changes says (refused: DeployError,
        nothing changed), then the checkout, with the live upstream file set aside. A stash is noted
        at once (it exists whatever follows); a discard once the checkout has done it."""
        own = own_files(self.cfg.app_dir, self.proxy.target)
        kept = await self.git.keep_changes(sha, own, self.run_info.url)
        stashed = bool(kept) and self.cfg.host_changes == "stash"
        if stashed:
            self.note_host_changes(kept)
        self.checked_out = True
        done = False
        try:
            async with self.switch.upstream_set_aside():
                await self.git.checkout(sha)
            done = True
        finally:
            if kept and not stashed:  # a discard: said once done, or as far as it may have gone
                self.note_host_changes(kept if done else f"{kept} (the checkout did not finish: some or all of them)")

    def note_host_changes(self, what: str) -> None:
        self.report.host_changes.append(what)
        self.out.info(what)

    async def already_live(self) -> bool:
        """A rerun of a deploy that got as far as the switch: the live color already runs this commit.
        If it is healthy, finish what the earlier run left (stop the other color) instead of redeploying."""
        live = self.report.live
        switched = last_switch(self.journal_tail or [])
        if not live or not switched or switched.get("to") != live or switched.get("ref") != self.report.sha:
            return False
        if switched.get("result") not in ("success", "switched"):
            return False  # a switch back names the commit it went back to: redeploy to be sure
        async with self.step("already-live", f"Check {live}, which already runs {self.report.sha[:12]}") as s:
            health = await wait_healthy(self.host, self.cfg.health_urls[live], min(self.cfg.health_timeout, 10), 1)
            s.detail = "healthy" if health.healthy else "not healthy: redeploying"
        if not health.healthy:
            return False
        self.report.already_live = True
        self.report.target = live
        self.out.info(f"{self.report.sha[:12]} is already live on {live} and healthy; not redeploying")
        await self.wait_turn()  # in a fleet: the old color stays until the fleet has switched
        await self.hold_for_fleet(switched=False)
        await self.finish_earlier_switch(live)
        return True

    async def finish_earlier_switch(self, live: Color) -> None:
        """The earlier run died after its switch: drain and retire the other color, if that is left to do."""
        cfg = self.cfg
        other = other_color(live)
        self.target_ids = [c.id for c in await self.stacks.of(live)]
        retire = await self.stacks.left_to_retire(other, cfg.keep_previous)
        if retire:
            title = f"Finish the earlier switch: {RETIRE_TITLE[cfg.keep_previous].lower()} {other}"
            async with self.step("stop", title) as s:
                drained, _ = await self.proxy.drain(await self.proxy.shutting_down(), cfg.drain_timeout)
                s.detail = f"drained in {drained:.1f}s; {await self.retire(other, cfg.drain_timeout - drained)}"
        if retire or self.switch_unended():
            await self.record("success")

    def switch_unended(self) -> bool:
        """The journal's last switch was never followed by its run's end (killed after the old color
        was already retired, say): this run records the end it did not."""
        journal = self.journal_tail or []
        switched = last_switch(journal)
        if switched is None or switched.get("result") != "switched":
            return False
        later = journal[journal.index(switched) + 1 :]
        return not any((e.get("run"), e.get("ref")) == (switched.get("run"), switched.get("ref")) for e in later)

    async def health_gate(self, target: Color, s: StepRecord) -> None:
        cfg = self.cfg
        report = await wait_healthy(self.host, cfg.health_urls[target], cfg.health_timeout, cfg.health_interval)
        self.report.health = report
        for note in report.notes:
            self.out.info(note)
        s.detail = f"{sum(r.healthy for r in report.results)}/{len(report.results)} URLs healthy"
        if not report.healthy:
            bad = report.failing()[0]
            raise DeployError(
                f"{bad.url} did not answer 2xx within {cfg.health_timeout}s (last: {bad.last}, {bad.attempts} "
                "attempts)",
                f"check the {target} containers' logs below; raise health-timeout if the app needs longer to start",
            )

    async def switch_to(self, target: Color, s: StepRecord) -> set[int]:
        """Point nginx at `target` (on a first deploy: start it), confirm, check public-url, commit.
        Returns the nginx workers that served before, for the drain."""
        cfg = self.cfg
        content, previous = await asyncio.gather(self.upstream_of(target), self.proxy.read_target())
        if not self.stacks.nginx_service:
            await self.switch.check_reachable(content, cfg.upstream_file_for(target), target, self.warn)
        out_since = time.monotonic()
        if not self.stacks.nginx_service:  # a reload (not a first start): its old workers close idle connections
            await self.lb.detach(target)
        if self.switch.previous is None:  # else a canary began the switch, from the upstream it replaced
            await self.switch.begin(previous, target, self.run_info.url, first=bool(self.stacks.nginx_service))
        old_workers: set[int] = set(self.canary.old_workers if self.canary else ())
        if self.stacks.nginx_service:
            s.detail = f"nginx started in {await self.switch.start_nginx(content, self.stacks.start_nginx):.1f}s"
        else:
            replaced, reload_seconds = await self.switch.reload(content)
            old_workers |= replaced
            s.detail = f"reload took {reload_seconds:.1f}s"
        if cfg.host_url and (last := await self.watch_host_url()):
            raise DeployError(
                f"host-url {cfg.host_url} did not answer {cfg.site_answers} on {cfg.host} after the switch "
                f"(last: {last})",
                "check the new upstream file and this host's nginx: host-url must reach the new color through it",
            )
        if self.lb.detached:
            await self.lb.attach(target)
            s.detail += f"; out of the load balancer for {time.monotonic() - out_since:.1f}s"
        if cfg.public_url and (
            last := await watch_public_url(cfg.public_url, cfg.site_up, verify=not cfg.public_url_insecure)
        ):
            raise DeployError(
                f"public-url {cfg.public_url} did not answer {cfg.site_answers} after the switch (last: {last})",
                "check the new upstream file: it must point at the new color's ports",
            )
        if self.canary is not None:  # before the marker goes: a dead run's marker still names the log
            await self.canary_log.remove()
        # Committed: the marker goes, and the journal says what now serves, at once, so a rerun after
        # a hard kill from here on finishes this switch instead of making another.
        self.switched_entry = self.journal_entry("switched")
        if adopted := await self.adopted_entry():
            await self.journal.record(adopted, None)
        await asyncio.gather(self.switch.commit(), self.journal.record(self.switched_entry, target))
        self.committed = True
        self.report.switched = True
        return old_workers

    async def upstream_of(self, color: Color) -> str:
        """`color`'s upstream file as the checkout has it."""
        cfg = self.cfg
        return await checked(
            self.host,
            commands.read_file(cfg.upstream_path(color)),
            f"reading {cfg.upstream_file}",
            f"commit {cfg.upstream_file_for(color)}",
        )

    async def drain(self, old_workers: set[int], s: StepRecord) -> float:
        timeout = self.cfg.drain_timeout
        drained, left = await self.proxy.drain(old_workers, timeout)
        s.detail = (
            f"{len(old_workers)} old workers gone in {drained:.1f}s"
            if not left
            else f"{left} old workers still busy after {drained:.0f}s"
        )
        if left:
            self.warn(
                f"{left} old nginx workers still had requests in flight after drain-timeout ({timeout}s); "
                f"they are cut when {self.report.live} stops",
                "Drain timeout",
            )
        return drained

    async def retire(self, color: Color, remaining_drain: float, keep: KeepPrevious | None = None) -> str:
        """The color that no longer serves, as keep-previous (or `keep`) says; requests still in flight
        get the rest of the drain window as stop grace."""
        grace = max(STOP_GRACE_MIN_SECONDS, math.ceil(remaining_drain))
        return await self.stacks.retire(color, grace, keep or self.cfg.keep_previous)

    async def pre_switch(self, target: Color, s: StepRecord) -> None:
        """pre-switch-command in the healthy target, before nginx sends it a request."""
        cfg = self.cfg
        service, argv = cfg.pre_switch_for(target)
        started = time.monotonic()
        status, output = await self.stacks.exec(target, service, argv, cfg.pre_switch_timeout)
        seconds = time.monotonic() - started
        self.out.host_output("output of pre-switch-command", output)
        self.report.pre_switch = (shlex.join([service, *argv]), status, self.out.scrub(_tail(output, PRE_SWITCH_TAIL)))
        s.detail = f"exit {status} in {seconds:.1f}s"
        if status == 124:
            raise DeployError(
                f"pre-switch-command ran past pre-switch-timeout ({cfg.pre_switch_timeout}s) in {service}",
                "raise pre-switch-timeout, or make the command faster; its output is above",
            )
        if status != 0:
            raise DeployError(
                f"pre-switch-command exited with status {status} in {service}",
                "fix the command (or what it runs); its output is above and in the summary",
            )

    async def adopted_entry(self) -> Entry | None:
        """A deploy that takes over a live color the journal knows nothing of (a host the seed's script
        set up, or an earlier release that recorded no containers) journals it as adopted: its
        containers, and the commit the checkout had before this run, not verified. A rollback can
        then go back to it."""
        live = self.report.live
        if self.cfg.command != "deploy" or not live or not self.head:
            return None
        known = last_switch(self.journal_tail or [], live, adopted=True)
        if known is not None and isinstance(known.get("containers"), list):
            return None
        ids = [c.id for c in await self.stacks.of(live)]
        entry = {**self.journal_entry("adopted"), "ref": self.head, "from": None, "to": live, "verified": False}
        return {**entry, "containers": ids} if ids else None

    def journal_entry(self, result: str) -> Entry:
        entry: Entry = {
            "time": now(),
            "ref": self.report.sha or self.cfg.ref,
            "from": self.report.live,
            "to": self.report.target,
            "result": result,
            "command": self.cfg.command,
            "keep": self.cfg.keep_previous,
            "steps": {s.name: round(s.seconds, 2) for s in self.report.steps},
            "run": self.run_info.url,
        }
        if result in SWITCHED:
            entry["containers"] = self.target_ids  # what a later rollback may start again
        if self.report.host_changes:
            entry["host-changes"] = self.report.host_changes
        if self.report.images and result in SWITCHED:
            entry["images"] = {r.service: r.journal() for r in self.report.images}
        if self.report.canary:
            entry["canary"] = [step.journal() for step in self.report.canary]
        return entry

    async def record(self, result: str) -> None:
        entry = self.journal_entry(result)
        await self.journal.record(entry, self.report.active_color)
        await self.show_journal(entry)

    async def show_journal(self, entry: Entry) -> None:
        """The summary's recent deploys: this one, then the four before it."""
        if self.journal_tail is None:  # failed before the journal was read
            self.journal_tail = await self.journal.tail(5)
        self.report.journal = [entry, *reversed(collapse(self.journal_tail)[-4:])]

    # -- failure path -----------------------------------------------------------------------------

    def warn(self, message: str, title: str) -> None:
        self.report.warnings.append(message)
        self.out.warning(message, title)

    def fail(self, message: str, fix: str, title: str = "") -> None:
        self.report.error = message
        self.report.fix = fix
        title = title or f"{self.cfg.command.capitalize()} failed at {self.report.failed_step or 'start'}"
        self.out.error(f"{message}" + (f" Fix: {fix}" if fix else ""), title)

    def served_before(self) -> str:
        """What nginx served before this run, in words: the live color, or the held split a promote or an
        abort started from (while its record stays)."""
        if self.cfg.command in ("promote", "abort") and self.held is not None and self.report.held:
            return f"the canary held at {self.held.share}% on {self.held.target}"
        return self.report.live or ""

    def after_switch_back(self, err: FleetStopped) -> tuple[str, str, str]:
        """What a host the fleet told to switch back did, as (message, fix, title): it switched back
        and confirmed it; it could not; or it made no switch, since it served this commit before."""
        live, new, host = self.report.live or "nothing", self.report.target or "the new color", err.host
        if self.report.already_live:
            return f"{err.cause}; {host} kept serving {live}, which it served before this run", err.fix, ""
        if self.report.uncertain:
            return f"{err.cause}; {host} could not switch back: {self.report.uncertain}", err.fix, "Switch back failed"
        if not self.report.switched and self.switch.started_nginx and not self.switch.nginx_stopped:
            return (
                f"{err.cause}; {host} could not switch back: the nginx this first deploy started could not be "
                f"stopped again, and it still serves {new}",
                f"{err.fix}, or stop its nginx by hand",
                "Switch back failed",
            )
        if not self.report.switched and self.switch.started_nginx:  # a first deploy: nothing served before
            return (
                f"{err.cause}; {err.why}{host} switched back: the nginx this first deploy started is stopped again",
                f"{err.fix}: {host} serves nothing again, as before this run",
                "",
            )
        if not self.report.switched:  # recover confirmed the old upstream and took the switch back
            before = self.served_before()
            return (
                f"{err.cause}; {err.why}{host} switched back to {before}",
                f"{err.fix}: {host} serves {before} again, as before this run",
                "",
            )
        by_hand = (
            f"putting the split of {held_path(self.cfg)} in place as the upstream file"
            if self.cfg.command == "promote" and self.report.held
            else f"putting {live}'s upstream file in place"
        )
        return (
            f"{err.cause}; {host} could not switch back ({self.recovery_error or 'the recovery did not run'}): it "
            f"still serves {new}",
            f"{err.fix}, or switch {host} back by hand (nginx -s reload after {by_hand}); until then it serves the "
            "new version",
            "Switch back failed",
        )

    async def recover(self) -> None:
        """Leave the host consistent: before the switch was committed, put back the upstream and
        remove the target; after it, record that the new color serves."""
        if self.remote is None or self.report.already_live:
            return
        target = self.report.target
        try:
            if self.remote.conn.is_closed():
                await self.reconnect()
            if self.committed:  # recorded when it was committed
                await self.show_journal(self.switched_entry)
                return
            switched_at = self.proxy.reloaded_at  # the reload that loaded the new upstream, if any
            if self.switched_back:  # from here a dead run leaves the marker: the next run settles it
                await self.switch.begin_back(self.report.target or "", self.run_info.url)
            if self.switch.reloaded and self.switch.previous is not None and not self.switch.started_nginx:
                # the undo reloads too: out again first
                await self.lb_in_recovery(lambda color: self.lb.detach(color, wait=False), "take it out of")
            if restored := await self.switch.undo(
                self.served_before() or "its previous content", self.stacks.stop_nginx
            ):
                self.report.rolled_back = self.switch.reloaded and not self.switch.started_nginx
                if self.report.rolled_back:
                    # from the reload that loaded the new upstream to the one that put the old one back
                    self.report.exposed = self.proxy.reloaded_at - switched_at
                    restored += f"; the new upstream served for {self.report.exposed:.2f}s"
                self.report.restored.append(restored)
                if self.canary is not None and self.canary.reloaded:
                    await self.after_canary()
                if self.switch.started_nginx and not self.switch.nginx_stopped:
                    self.report.unfinished = "nginx could not be stopped again: it still serves the new upstream"
            if self.lb.detached and await self.lb_in_recovery(self.lb.attach, "put it back into"):
                self.report.restored.append(f"{self.lb.name} put back into the load balancer")
            if self.switched_back:  # the new color served real traffic: journal the way back, then drain it
                self.report.switched, self.report.rolled_back = False, True
                await self.record_switched_back()
                if not self.switch.started_nginx:  # a first deploy's nginx is stopped: nothing to drain
                    await self.drain_in_recovery()
            if target and (self.target_touched or self.target_ids):
                logs = await self.stacks.logs(target, LOG_TAIL)
                self.report.logs = self.out.scrub(logs)
                self.out.host_output(f"last {LOG_TAIL} log lines of {target}", logs)
            if self.started_ids:
                await self.stacks.stop_ids(self.started_ids)
                self.report.restored.append(f"{target}'s kept containers stopped again")
            if self.checkout_back and self.checked_out:  # a checkout refused before it changed anything: none back
                await self.check_out_back(self.checkout_back)
            if self.target_touched and target:
                # The target never served: a short stop keeps recovery inside the runner's cancel window.
                await self.stacks.remove(target, TEARDOWN_STOP_SECONDS, refresh=True)
                self.report.restored.append(
                    f"{target} containers removed; {self.report.live or 'nothing'} keeps serving"
                )
            if self.checked_out:  # a refusal before the checkout changed nothing, not even the journal
                await self.record("failed")
        except Exception as err:
            known = isinstance(err, (RemoteError, CommandFailed, NginxError, DeployError))
            if self.lb.detached:
                self.report.restored.append(f"{self.lb.name} may still be out of the load balancer")
            cause = self.recovery_error = str(err) if known else f"unexpected error: {describe(err)}"
            if isinstance(err, LockLost):
                self.mark_uncertain()
            self.report.unfinished = cause
            self.report.restored.append(f"recovery did not finish: {cause}")
            self.out.error(f"recovery did not finish: {cause}", "Recovery incomplete")

    def hurry(self) -> None:
        """The run was cancelled: load balancer hooks from here get HURRIED_SECONDS each."""
        if self.remote is not None:
            self.lb.hurry = True

    async def out_for_settling(self) -> bool:
        """Before the live color is found: a run that died mid-switch has its switch undone by a reload
        (Switch.settle_interrupted), and one that died while the host was out of the load balancer
        left it out. With the hooks set, the host leaves (again) before that reload, and is put back
        after; without them, a note left by an earlier run is dropped. Whether a run left it out."""
        left_out = await self.lb.left_out()
        if left_out and not self.lb.active:
            await self.lb.forget()
            self.warn(
                f"a previous run left {self.lb.name} out of the load balancer, and lb-attach-command is no longer "
                "set: put it back by hand",
                "Host left out",
            )
            return False
        if self.stacks.nginx_service:  # nginx is not running: nothing to put back into the load balancer yet
            if left_out:
                self.warn(f"{self.lb.name} stays out of the load balancer until its nginx runs", "Host left out")
            return False
        if left_out or await self.switch.interrupted():
            await self.lb.detach(None)
        return left_out

    async def lb_in_recovery(self, hook: Callable[[Color | None], Awaitable[object]], what: str) -> bool:
        """A load balancer hook during the recovery: a failure is said and the recovery goes on (putting
        the old upstream back matters more than the race the hook avoids). Whether it ran through."""
        try:
            await hook(self.report.live)
        except (DeployError, RemoteError) as err:
            self.report.restored.append(f"could not {what} the load balancer: {err}")
            self.out.error(f"could not {what} the load balancer: {err}", "Load balancer hook failed")
            if hook == self.lb.attach:  # the host stays out of the load balancer: not restored
                self.report.unfinished = f"could not {what} the load balancer"
            return False
        return True

    async def check_out_back(self, sha: str) -> None:
        """Recovery's checkout of the commit the live color runs, by host-changes' rule too: changes
        made on the host meanwhile are never lost (refused: the checkout is left as it is), nor a file
        the host made that the commit tracks."""
        try:
            await self.checkout(sha)
        except DeployError as err:
            self.report.restored.append(f"the checkout back at {sha[:12]} was not done: {err}")
            self.report.unfinished = f"the checkout back at {sha[:12]} was not done"
            return
        self.report.restored.append(f"checkout back at {sha[:12]}, which {self.report.live} runs")

    async def reconnect(self) -> None:
        """The SSH connection dropped mid-deploy (and with it the lock): connect and lock again."""
        self.out.info("the SSH connection dropped; reconnecting to leave the host consistent")
        self.lock.forget()
        self.remote = await Remote.connect(self.cfg)
        for part in self.parts():
            part.host = self.remote
        await self.lock.take(RECONNECT_LOCK_SECONDS, now, again=True)

    async def close(self) -> None:
        if self.remote is not None:
            self.lb.release()
            self.lock.release()
            await self.remote.close()


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
