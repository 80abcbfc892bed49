"""The deploy orchestrator: the seed's steps, in its order, with the failure path beside them.

    deploy:   connect → preflight → lock → live color → sync → base → build → health → pre-switch → switch
              → drain → retire old → record
    rollback: connect → preflight → lock → live color → plan → checkout → start kept → health → switch
              → drain → retire old → record

Each family of work lives in its own module: `stacks` (the base and the colors: start, build, stop,
adopt), `switch` (the nginx switch and its marker), `lock`, `journal`, `health`. Any failure before
the switch is committed tears the target color down and leaves (or puts back) the previous upstream;
the base is never restarted.
"""

from __future__ import annotations

import asyncio
import math
import shlex
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from . import commands
from .config import COLORS, Color, Config, other_color
from .errors import DeployError
from .health import wait_healthy
from .journal import STATE_DIR, SWITCHED, Journal, collapse, last_switch, now
from .lock import DeployLock, RunInfo
from .nginx import Nginx, NginxError, live_color
from .remote import CommandFailed, Remote, RemoteError, checked, last_line
from .report import Report, Reporter, StepRecord
from .stacks import STOP_TIMEOUT_MIN, Container, Stacks, compose_services, from_file, parse_containers
from .switch import Switch

TEARDOWN_STOP_TIMEOUT = 2
RECONNECT_LOCK_TIMEOUT = 30
LOG_TAIL = 50
PUBLIC_URL_EVERY = 0.1  # seconds between probes of public-url after the switch
PUBLIC_URL_DECIDE = 0.3  # failures for this long, with no 2xx between them, switch back
PUBLIC_URL_TIMEOUT = 5
PRE_SWITCH_TAIL = 20  # lines of pre-switch-command's output in the job summary
JOURNAL_LOOKBACK = 200  # entries a rollback reads to find what the previous color ran
RETIRE_TITLE = {"stopped": "Stop", "running": "Keep running:", "none": "Stop and remove"}


class Deployer:
    def __init__(self, config: Config, out: Reporter, run: RunInfo) -> None:
        self.cfg = config
        self.out = out
        self.run_info = run
        self.report = Report(ref=config.ref)
        self.remote: Remote | None = None
        self.target_touched = False
        self.committed = False
        self.switched_entry: dict[str, object] = {}
        self.journal_tail: list[dict[str, object]] | None = None  # the journal's last entries, oldest first
        self.target_ids: list[str] = []  # the target color's containers, recorded when it serves
        self.started_ids: list[str] = []  # a rollback: kept containers it started, stopped again on failure
        self.checkout_back = ""  # a rollback: the commit to check out again if it fails before the switch
        self.report.command = config.command

    def attach(self, remote: Remote) -> None:
        """Make the step modules, on this connection."""
        cfg = self.cfg
        self.remote = remote
        self.proxy = Nginx(remote, cfg.nginx_container, cfg.upstream_target_path, cfg.nginx_sudo)
        self.switch = Switch(remote, self.proxy, cfg.app_dir, cfg.upstream_target)
        self.lock = DeployLock(remote, cfg.app_path(STATE_DIR), self.run_info, self.out.info)
        self.journal = Journal(remote, cfg.app_dir)
        self.stacks = Stacks(remote, cfg, self.out.info)

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
        try:
            await self.steps()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self.fail(
                "the run was cancelled (SIGINT/SIGTERM)",
                "rerun the job: a rerun deploys the same commit and resumes from any state",
            )
            await self.recover()
        except (DeployError, RemoteError, NginxError, CommandFailed) as err:
            if isinstance(err, DeployError) and err.output:
                self.out.host_output(f"output of {err.what}", err.output)
            self.fail(str(err), getattr(err, "fix", ""))
            await self.recover()
        finally:
            await self.close()
        return self.report

    async def steps(self) -> None:
        cfg = self.cfg
        async with self.step("connect", f"Connect to {cfg.username}@{cfg.host}:{cfg.port}") as s:
            if cfg.insecure_skip_host_key_check:
                self.warn(
                    "the host key is not checked (insecure-skip-host-key-check: true); pin it with known-hosts or "
                    "fingerprint",
                    "Host key not checked",
                )
            self.attach(await Remote.connect(cfg))
            s.detail = "host key verified" if not cfg.insecure_skip_host_key_check else "host key NOT checked"
        async with self.step("preflight", "Check the host"):
            await self.preflight()
        async with self.step("lock", "Take the deploy lock"):
            await self.lock.take(cfg.lock_timeout, now)
        async with self.step("live", "Find the live color") as s:
            live = await self.find_live_color()
            self.report.live = live
            self.report.target = target = other_color(live) if live else "blue"
            self.report.first_deploy = bool(self.stacks.nginx_service)
            s.detail = f"nginx serves {live}" if live else "nginx serves neither color yet"
            if self.report.first_deploy:
                s.detail = "first deploy: nginx is not running yet"
        if cfg.command == "rollback":
            await self.rollback_steps()
            return
        async with self.step("sync", f"Sync {cfg.ref}") as s:
            self.report.sha = await self.sync()
            s.detail = self.report.sha[:12]
        if await self.already_live():
            return
        if cfg.base_compose_file:
            async with self.step("base", "Bring up the base stack") as s:
                s.detail = await self.stacks.base_up()
        async with self.step("build", f"Build and start {target}"):
            self.target_touched = True
            await self.stacks.build(target)
            self.target_ids = [c.id for c in await self.stacks.of(target, refresh=True)]
        async with self.step("health", f"Health-check {target}") as s:
            await self.health_gate(target, s)
        if cfg.pre_switch_command:
            service, _ = cfg.pre_switch_for(target)
            async with self.step("pre-switch", f"Run pre-switch-command in {service}") as s:
                await self.pre_switch(target, s)
        await self.switch_and_retire(target)

    async def switch_and_retire(self, target: Color) -> None:
        """Switch, drain, then treat the color that served before as keep-previous says, and record."""
        cfg = self.cfg
        async with self.step("switch", f"Switch nginx to {target}") as s:
            old_workers = await self.switch_to(target, s)
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

    async def rollback_steps(self) -> None:
        """Back to the color that served before, at the commit it ran: its kept containers, no build."""
        self.journal_tail = await self.journal.tail(JOURNAL_LOOKBACK)
        if await self.rollback_done():
            return
        async with self.step("plan", "Find what to roll back to") as s:
            target, containers, back = await self.plan_rollback()
            s.detail = f"{target} at {self.report.sha[:12]}"
        async with self.step("sync", f"Check out {self.report.sha[:12]}"):
            self.checkout_back = back
            await self.checkout(self.report.sha)
        async with self.step("start", f"Start {target}") as s:
            self.started_ids = await self.stacks.start(containers)
            self.target_ids = [c.id for c in containers]
            s.detail = f"started {len(self.started_ids)} kept containers" if self.started_ids else "already running"
        async with self.step("health", f"Health-check {target}") as s:
            await self.health_gate(target, s)
        await self.switch_and_retire(target)

    # -- steps ------------------------------------------------------------------------------------

    async def preflight(self) -> None:
        cfg = self.cfg
        docker, checkout, v2, v1, nginx = await asyncio.gather(
            self.host.run(commands.docker_server_version(), check=False),
            self.host.run(commands.git_is_checkout(cfg.app_dir), check=False),
            self.host.run(commands.compose_detect("v2"), check=False),
            self.host.run(commands.compose_detect("v1"), check=False),
            self.proxy.is_running(),
        )
        user = cfg.username
        if docker.status == 127:
            raise DeployError(
                "docker is not installed on the host (or not on the deploy user's PATH)", "install Docker on the host"
            )
        if not docker.ok:
            if "permission denied" in docker.stderr:
                raise DeployError(
                    f"{user} may not use docker on the host",
                    f"add the user to the docker group: usermod -aG docker {user} (then log in again)",
                )
            raise DeployError(
                f"dockerd does not answer on the host: {last_line(docker.stderr)}",
                "start Docker on the host: systemctl start docker",
            )
        if checkout.stdout.strip() != "true":
            if "dubious ownership" in checkout.stderr:
                raise DeployError(
                    f"app-dir {cfg.app_dir} belongs to another user, so git refuses it",
                    f"deploy as the owner of {cfg.app_dir}, or chown it to {user}",
                )
            raise DeployError(
                f"app-dir {cfg.app_dir} is missing or not a git checkout on the host",
                f"clone the app there: git clone <repo> {cfg.app_dir}",
            )
        variant = commands.choose_compose(v2.ok, v1.ok)
        if variant is None:
            raise DeployError(
                "neither 'docker compose' (v2) nor 'docker-compose' (v1) is on the host",
                "install the Docker Compose plugin, or docker-compose",
            )
        self.stacks.variant = variant
        self.out.info(f"compose: {'docker compose (v2)' if variant == 'v2' else 'docker-compose (v1)'}")
        if not cfg.nginx_container:
            await self.proxy.check_available()
        elif not nginx:
            self.stacks.nginx_service = await self.first_deploy_nginx()

    async def first_deploy_nginx(self) -> str:
        """On a host where nothing runs yet, the nginx container is a service of the base stack, which
        this deploy starts; anything else (a typo in nginx-container) is an error."""
        cfg = self.cfg
        service = await self.stacks.find_nginx_service()
        if service is None:
            where = "base-compose-file is empty"
            if cfg.base_compose_file:
                where = f"no service of {cfg.base_compose_file} makes a container of that name"
            raise NginxError(
                f"nginx container '{cfg.nginx_container}' is not running on the host, and {where}",
                "set nginx-container to the name 'docker ps' shows for nginx (or its container_name in the base "
                "compose file),"
                " or start it",
            )
        self.out.info(
            f"first deploy: nginx container '{cfg.nginx_container}' is not running; it is service '{service}' of "
            f"{cfg.base_compose_file}, started after the health gate"
        )
        return service

    async def find_live_color(self) -> Color | None:
        cfg = self.cfg
        if await self.switch.put_back_upstream():
            self.warn(
                f"a previous run died while {cfg.upstream_target} was set aside for git checkout; it was put back",
                "Upstream file restored",
            )
        nginx_runs = not self.stacks.nginx_service
        if settled := await self.switch.settle_interrupted(nginx_runs):
            self.warn(settled, "Interrupted switch undone")
        reads = (cfg.upstream_path("blue"), cfg.upstream_path("green"), cfg.app_path(".active_env"))
        dump, (blue, green, active_env) = await asyncio.gather(
            self.proxy.dump() if nginx_runs else _nothing(),
            asyncio.gather(*(self.host.run(commands.read_file(path), check=False) for path in reads)),
        )
        live = live_color(dump, {"blue": blue.stdout, "green": green.stdout})
        cached = active_env.stdout.strip()
        if cached in COLORS and live and cached != live:
            self.warn(
                f".active_env says {cached} but nginx serves {live}; trusting nginx (a previous run probably died "
                "after the switch)",
                "Live color drift",
            )
        if live is None and cached in COLORS:
            self.warn(
                f"nginx serves neither upstream file; .active_env says {cached}, so {cached} is treated as live",
                "Live color unknown",
            )
            return cached
        return live

    async def sync(self) -> str:
        cfg = self.cfg
        app = cfg.app_dir
        await checked(
            self.host,
            commands.git_fetch(app),
            "git fetch",
            f"check that {cfg.username} can fetch the app's origin remote in {app} (deploy key, network)",
        )
        sha = ""
        for candidate in commands.ref_candidates(cfg.ref):
            if (
                candidate == "FETCH_HEAD"
                and not (await self.host.run(commands.git_fetch_ref(app, cfg.ref), check=False)).ok
            ):
                break
            resolved = await self.host.run(commands.git_resolve(app, candidate), check=False)
            if resolved.ok:
                sha = resolved.stdout.strip()
                break
        if not sha:
            raise DeployError(
                f"ref {cfg.ref} was not found in the origin of {app}",
                "push the commit first, or give an existing commit, branch or tag as ref",
            )
        await self.check_files(sha)
        await self.checkout(sha)
        return sha

    async def checkout(self, sha: str) -> None:
        app = self.cfg.app_dir
        async with self.switch.upstream_set_aside():
            await checked(
                self.host, commands.git_checkout(app, sha), f"git checkout {sha[:12]}", f"check the work tree in {app}"
            )

    async def check_files(self, sha: str) -> None:
        """Before the checkout changes anything: the files this deploy needs exist in the commit (or,
        untracked, on the host)."""
        cfg = self.cfg
        target = self.report.target
        assert target is not None
        needed = [(cfg.compose_file_for(target), "compose-file"), (cfg.upstream_file_for(target), "upstream-file")]
        if cfg.base_compose_file:
            needed.append((cfg.base_compose_file, "base-compose-file"))
        checks = [
            self.host.run(argv, check=False)
            for path, _ in needed
            for argv in (commands.git_has_file(cfg.app_dir, sha, path), commands.path_exists(cfg.app_path(path)))
        ]
        found = await asyncio.gather(*checks)
        for (path, name), in_commit, on_disk in zip(needed, found[::2], found[1::2], strict=True):
            if not (in_commit.ok or on_disk.ok):
                raise DeployError(
                    f"{path} does not exist at {sha[:12]} ({name})",
                    f"commit {path}, or set {name} to where the file is",
                )
        if cfg.pre_switch_command:
            await self.check_pre_switch_service(sha, target, found[0].ok)

    async def check_pre_switch_service(self, sha: str, target: Color, in_commit: bool) -> None:
        """pre-switch-command names a service of the target's compose file, as the commit has it."""
        cfg = self.cfg
        path = cfg.compose_file_for(target)
        argv = commands.git_show_file(cfg.app_dir, sha, path) if in_commit else commands.read_file(cfg.app_path(path))
        text = (await self.host.run(argv, check=False)).stdout
        service, _ = cfg.pre_switch_for(target)
        services = compose_services(text)
        if service not in services:
            raise DeployError(
                f"pre-switch-command: '{service}' is not a service of {path} at {sha[:12]} "
                f"(it has: {', '.join(services) or 'none'})",
                "start pre-switch-command with a service of the color's compose file; {color} becomes blue or green",
            )

    async def already_live(self) -> bool:
        """A rerun of a deploy that got as far as the switch: the live color already runs this commit.
        If it is healthy, finish what the earlier run left (stop the other color) instead of redeploying."""
        live = self.report.live
        self.journal_tail = await self.journal.tail(20)
        switched = last_switch(self.journal_tail)
        if not live or not switched or switched.get("to") != live or switched.get("ref") != self.report.sha:
            return False
        async with self.step("already-live", f"Check {live}, which already runs {self.report.sha[:12]}") as s:
            health = await wait_healthy(self.host, self.cfg.health_urls[live], min(self.cfg.health_timeout, 10), 1)
            s.detail = "healthy" if health.healthy else "not healthy: redeploying"
        if not health.healthy:
            return False
        self.report.already_live = True
        self.report.target = live
        self.out.info(f"{self.report.sha[:12]} is already live on {live} and healthy; not redeploying")
        await self.finish_earlier_switch(live)
        return True

    async def finish_earlier_switch(self, live: Color) -> None:
        """The earlier run died after its switch: drain and retire the other color, if that is left to do."""
        cfg = self.cfg
        other = other_color(live)
        self.target_ids = [c.id for c in await self.stacks.of(live)]
        if await self.stacks.left_to_retire(other, cfg.keep_previous):
            title = f"Finish the earlier switch: {RETIRE_TITLE[cfg.keep_previous].lower()} {other}"
            async with self.step("stop", title) as s:
                drained, _ = await self.proxy.drain(await self.proxy.shutting_down(), cfg.drain_timeout)
                s.detail = f"drained in {drained:.1f}s; {await self.retire(other, cfg.drain_timeout - drained)}"
            await self.record("success")

    # -- rollback ---------------------------------------------------------------------------------

    async def plan_rollback(self) -> tuple[Color, list[Container], str]:
        """The color to go back to, its commit (into report.sha), its kept containers and the commit
        the live color runs; or a DeployError saying why there is nothing to roll back to. Changes nothing."""
        live = self.report.live
        fix = "deploy the commit you want instead (command: deploy)"
        if self.report.first_deploy:
            raise DeployError(
                f"nothing to roll back: nginx ({self.cfg.nginx_container}) is not running, so no color serves",
                "start nginx, or deploy",
            )
        if live is None:
            raise DeployError("nothing to roll back: nginx serves neither color", fix)
        await self.stacks.choose_color_projects()
        journal = self.journal_tail or []
        target = other_color(live)
        self.report.target = target
        entry = last_switch(journal, target)
        if entry is None:
            raise DeployError(f"nothing to roll back to: the journal has no deploy that switched to {target}", fix)
        ref, recorded = str(entry.get("ref", "")), entry.get("containers")
        later = journal[journal.index(entry) + 1 :]
        found = await self.stacks.of(target)
        if not found:
            removed = [
                e for e in later if e.get("result") in SWITCHED and e.get("from") == target and e.get("keep") == "none"
            ]
            why = (
                f"the deploy of {str(removed[-1].get('ref', ''))[:12]} removed them (keep-previous: none)"
                if removed
                else "they were removed"
            )
            raise DeployError(f"nothing to roll back to: {target}'s containers from {ref[:12]} are gone: {why}", fix)
        if not isinstance(recorded, list) or {c.id for c in found} != set(recorded):
            raise DeployError(
                f"nothing to roll back to: {target}'s containers are not the ones that served {ref[:12]} "
                "(a later deploy rebuilt them, or the journal entry predates container tracking)",
                fix,
            )
        self.report.sha = ref
        live_entry = last_switch(journal, live)
        return target, found, str(live_entry.get("ref", "")) if live_entry else ""

    async def rollback_done(self) -> bool:
        """A rerun of a rollback that got past its switch: finish it instead of rolling back again."""
        switched = last_switch(self.journal_tail or [])
        url = self.run_info.url
        if not (url and switched and switched.get("command") == "rollback" and switched.get("run") == url):
            return False
        live = self.report.live
        if live is None or switched.get("to") != live:
            return False
        self.report.already_live = True
        self.report.target = live
        self.report.sha = str(switched.get("ref", ""))
        self.out.info(f"this run already rolled back to {live} at {self.report.sha[:12]}; not rolling back again")
        await self.finish_earlier_switch(live)
        return True

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
        content, previous = await asyncio.gather(
            checked(
                self.host,
                commands.read_file(cfg.upstream_path(target)),
                f"reading {cfg.upstream_file}",
                f"commit {cfg.upstream_file_for(target)}",
            ),
            self.proxy.read_target(),
        )
        if not self.stacks.nginx_service:
            await self.check_reachable(target, content)
        await self.switch.begin(previous, target, self.run_info.url)
        old_workers: set[int] = set()
        if self.stacks.nginx_service:
            s.detail = f"nginx started in {await self.switch.start_nginx(content, self.stacks.start_nginx):.1f}s"
        else:
            old_workers, reload_seconds = await self.switch.reload(content)
            s.detail = f"reload took {reload_seconds:.1f}s"
        await self.check_public_url()
        # Committed: the marker goes, and the journal says what now serves, at once, so a rerun after
        # a hard kill from here on finishes this switch instead of making another.
        self.switched_entry = self.journal_entry("switched")
        await asyncio.gather(self.switch.commit(), self.journal.record(self.switched_entry, target))
        self.committed = True
        self.report.switched = True
        return old_workers

    async def check_reachable(self, target: Color, content: str) -> None:
        """Never switch to an upstream nginx cannot connect to: every `server` is tried from nginx's own
        network view before anything is written or reloaded."""
        unreachable = await self.proxy.unreachable(content)
        upstream = self.cfg.upstream_file_for(target)
        if unreachable is None:
            self.warn(
                f"could not check that nginx reaches the servers of {upstream}: its image has no bash, nc or perl",
                "Upstream servers not checked",
            )
        elif unreachable:
            where = f"in the nginx container {self.cfg.nginx_container}" if self.cfg.nginx_container else "on the host"
            raise DeployError(
                f"nginx cannot connect to {', '.join(unreachable)} ({upstream}, tried {where}); nothing was reloaded",
                f"point {upstream} at the {target} services as nginx reaches them: compose service names on a shared "
                "network, host ports with the host network",
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

    async def retire(self, color: Color, remaining_drain: float) -> str:
        """The color that no longer serves, as keep-previous says; requests still in flight get the rest
        of the drain window as stop grace."""
        grace = max(STOP_TIMEOUT_MIN, math.ceil(remaining_drain))
        return await self.stacks.retire(color, grace, self.cfg.keep_previous)

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

    async def check_public_url(self) -> None:
        """Probe public-url every 100 ms from the switch on: a 2xx passes; failures for 0.3 s with no 2xx
        between them fail, so a bad upstream serves for well under a second."""
        url = self.cfg.public_url
        if not url:
            return
        last = ""
        failing_since: float | None = None
        async with httpx.AsyncClient(timeout=PUBLIC_URL_TIMEOUT) as client:
            while failing_since is None or time.monotonic() - failing_since < PUBLIC_URL_DECIDE:
                try:
                    response = await client.get(url)
                    last = f"HTTP {response.status_code}"
                    if 200 <= response.status_code < 300:
                        return
                except httpx.HTTPError as err:
                    last = type(err).__name__
                failing_since = failing_since or time.monotonic()
                await asyncio.sleep(PUBLIC_URL_EVERY)
        raise DeployError(
            f"public-url {url} did not answer 2xx after the switch (last: {last})",
            "check the new upstream file: it must point at the new color's ports",
        )

    def journal_entry(self, result: str) -> dict[str, object]:
        entry: dict[str, object] = {
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
        return entry

    async def record(self, result: str) -> None:
        entry = self.journal_entry(result)
        await self.journal.record(entry, self.report.active_color)
        await self.show_journal(entry)

    async def show_journal(self, entry: dict[str, object]) -> None:
        """The summary's recent deploys: this one, then the four before it."""
        if self.journal_tail is None:  # failed before the journal was read
            self.journal_tail = (await self.journal.tail(5))[:-1]
        self.report.journal = [entry, *reversed(collapse(self.journal_tail)[-4:])]

    # -- failure path -----------------------------------------------------------------------------

    def warn(self, message: str, title: str) -> None:
        self.report.warnings.append(message)
        self.out.warning(message, title)

    def fail(self, message: str, fix: str) -> None:
        self.report.error = message
        self.report.fix = fix
        title = f"{self.cfg.command.capitalize()} failed at {self.report.failed_step or 'start'}"
        self.out.error(f"{message}" + (f" Fix: {fix}" if fix else ""), title)

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
            if restored := await self.switch.undo(self.report.live or "its previous content", self.stacks.stop_nginx):
                self.report.rolled_back = self.switch.reloaded and not self.switch.started_nginx
                if self.report.rolled_back:
                    # from the reload that loaded the new upstream to the one that put the old one back
                    self.report.exposed = self.proxy.reloaded_at - switched_at
                    restored += f"; the new upstream served for {self.report.exposed:.2f}s"
                self.report.restored.append(restored)
            if target and (self.target_touched or self.target_ids):
                logs = await self.stacks.logs(target, LOG_TAIL)
                self.report.logs = self.out.scrub(logs)
                self.out.host_output(f"last {LOG_TAIL} log lines of {target}", logs)
            if self.started_ids:
                await self.stacks.stop_ids(self.started_ids)
                self.report.restored.append(f"{target}'s kept containers stopped again")
            if self.checkout_back:
                await self.checkout(self.checkout_back)
                self.report.restored.append(
                    f"checkout back at {self.checkout_back[:12]}, which {self.report.live} runs"
                )
            if self.target_touched and target:
                # The target never served: a short stop keeps recovery inside the runner's cancel window.
                await self.stacks.remove(target, TEARDOWN_STOP_TIMEOUT, refresh=True)
                self.report.restored.append(
                    f"{target} containers removed; {self.report.live or 'nothing'} keeps serving"
                )
            if self.report.sha:
                await self.record("failed")
        except (RemoteError, CommandFailed, NginxError, DeployError) as err:
            self.report.restored.append(f"recovery did not finish: {err}")
            self.out.error(f"recovery did not finish: {err}", "Recovery incomplete")

    async def reconnect(self) -> None:
        """The SSH connection dropped mid-deploy (and with it the lock): connect and lock again."""
        self.out.info("the SSH connection dropped; reconnecting to leave the host consistent")
        self.lock.forget()
        self.remote = await Remote.connect(self.cfg)
        for part in (self.proxy, self.switch, self.lock, self.journal, self.stacks):
            part.host = self.remote
        await self.lock.take(RECONNECT_LOCK_TIMEOUT, now)

    async def close(self) -> None:
        if self.remote is not None:
            self.lock.release()
            await self.remote.close()


async def deploy_with_signals(deployer: Deployer) -> Report:
    """Run a deploy; SIGINT or SIGTERM cancels it into the recovery path. GitHub's runner sends
    SIGINT, then SIGTERM 7.5 s later: the first starts the recovery, later ones must not interrupt it."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: None if task.cancelling() else task.cancel())
    report = await deployer.run()
    deployer.out.finish(report)
    return report


async def host_status(config: Config) -> dict[str, object]:
    """What runs on the host: the live color per nginx, .active_env, each stack's containers, the last deploys."""
    remote = await Remote.connect(config)
    try:
        proxy = Nginx(remote, config.nginx_container, config.upstream_target_path, config.nginx_sudo)
        await proxy.check_available()
        journal = Journal(remote, config.app_dir)
        paths = (config.upstream_path("blue"), config.upstream_path("green"), config.app_path(".active_env"))
        reads = [*(commands.read_file(path) for path in paths), commands.app_containers(config.app_dir)]
        dump, (blue, green, active_env, listing), recent = await asyncio.gather(
            proxy.dump(), asyncio.gather(*(remote.run(argv, check=False) for argv in reads)), journal.tail(5)
        )
    finally:
        await remote.close()
    containers = parse_containers(listing.stdout)
    files = {"blue": config.compose_path("blue"), "green": config.compose_path("green")}
    if config.base_compose_file:
        files = {"base": config.app_path(config.base_compose_file), **files}
    return {
        "live-color": live_color(dump, {"blue": blue.stdout, "green": green.stdout}) or "",
        "active-env": active_env.stdout.strip(),
        "containers": {
            stack: sorted(f"{c.name} ({'running' if c.running else 'stopped'})" for c in from_file(containers, file))
            for stack, file in files.items()
        },
        "recent-deploys": list(reversed(recent)),
    }


async def _nothing() -> str:
    return ""


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
