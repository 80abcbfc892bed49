"""The deploy orchestrator: named steps in the seed's order, with the failure path beside them.

connect → preflight → lock → live color → sync → base → build → health → switch → drain → stop old → record

Any failure before the switch is committed tears the target color down and leaves (or puts back)
the previous upstream; the base stack is never touched after its idempotent `up`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import posixpath
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import asyncssh
import httpx

from . import commands
from .commands import Compose, ComposeVariant
from .config import COLORS, Color, Config, other_color
from .health import wait_healthy
from .nginx import Nginx, NginxError, live_color
from .remote import CommandFailed, Remote, RemoteError, last_line
from .report import Report, Reporter, StepRecord
from .stacks import Container, compose_services, from_file, parse_containers, service_of_container, shared_names

BUILD_TIMEOUT = 1800
STOP_TIMEOUT_MIN = 10
TEARDOWN_STOP_TIMEOUT = 2
RECONNECT_LOCK_TIMEOUT = 30
LOCK_MAX_SECONDS = 7200
LOG_TAIL = 50
STATE_DIR = ".bluegreen"


class DeployError(RuntimeError):
    def __init__(self, message: str, fix: str = "") -> None:
        self.fix = fix
        super().__init__(message)


@dataclass(frozen=True)
class RunInfo:
    """Who runs this deploy, from the GITHUB_* variables; recorded in the lock and the journal."""

    repository: str = ""
    run_id: str = ""
    attempt: str = ""
    url: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str]) -> RunInfo:
        server, repo, run = env.get("GITHUB_SERVER_URL", ""), env.get("GITHUB_REPOSITORY", ""), env.get("GITHUB_RUN_ID", "")
        url = f"{server}/{repo}/actions/runs/{run}" if server and repo and run else ""
        return cls(repo, run, env.get("GITHUB_RUN_ATTEMPT", ""), url)


class Deployer:
    def __init__(self, config: Config, out: Reporter, run: RunInfo) -> None:
        self.cfg = config
        self.out = out
        self.run_info = run
        self.report = Report(ref=config.ref)
        self.remote: Remote | None = None
        self.variant: ComposeVariant = "v2"
        self.nginx: Nginx | None = None
        self.lock: asyncssh.SSHClientProcess[str] | None = None
        self.previous_upstream: str | None = None  # set once the upstream target was written
        self.reloaded = False  # set just before nginx is told to reload with the new upstream
        self.target_touched = False
        self.committed = False
        self.nginx_service = ""  # first deploy: the base service of the nginx container, started after the switch is written
        self.split_colors = False  # both color files define the same service names: each color gets a project of its own
        self._containers: list[Container] | None = None
        self.journal_tail: list[dict[str, object]] | None = None  # the journal's last entries, oldest first
        self.state_dir = config.app_path(STATE_DIR)

    # -- plumbing ---------------------------------------------------------------------------------

    @property
    def host(self) -> Remote:
        assert self.remote is not None
        return self.remote

    @property
    def journal_path(self) -> str:
        return posixpath.join(self.state_dir, "journal.jsonl")

    @property
    def proxy(self) -> Nginx:
        assert self.nginx is not None
        return self.nginx

    def compose(self, stack: Color | Literal["base"]) -> Compose:
        """The base and both colors share one project (its default network and named volumes), as
        under the seed's script, unless the colors' service names collide."""
        cfg = self.cfg
        if stack == "base":
            return Compose(self.variant, cfg.project_name, cfg.app_path(cfg.base_compose_file), cfg.app_dir)
        project = f"{cfg.project_name}-{stack}" if self.split_colors else cfg.project_name
        return Compose(self.variant, project, cfg.compose_path(stack), cfg.app_dir)

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

    async def run_checked(self, argv: list[str], what: str, fix: str, timeout: int = 120) -> str:
        try:
            result = await self.host.run(argv, timeout=timeout)
        except CommandFailed as err:
            self.out.host_output(f"output of {what}", err.stderr or err.stdout)
            raise DeployError(f"{what} failed: {err}", fix) from None
        return result.stdout

    # -- the deploy -------------------------------------------------------------------------------

    async def run(self) -> Report:
        try:
            await self.steps()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self.fail("the run was cancelled (SIGINT/SIGTERM)", "rerun the job: a rerun deploys the same commit and resumes from any state")
            await self.recover()
        except (DeployError, RemoteError, NginxError, CommandFailed) as err:
            self.fail(str(err), getattr(err, "fix", ""))
            await self.recover()
        finally:
            await self.close()
        return self.report

    async def steps(self) -> None:
        cfg = self.cfg
        async with self.step("connect", f"Connect to {cfg.username}@{cfg.host}:{cfg.port}") as s:
            if cfg.insecure_skip_host_key_check:
                self.warn("the host key is not checked (insecure-skip-host-key-check: true); pin it with known-hosts or fingerprint", "Host key not checked")
            self.remote = await Remote.connect(cfg)
            s.detail = "host key verified" if not cfg.insecure_skip_host_key_check else "host key NOT checked"
        async with self.step("preflight", "Check the host"):
            await self.preflight()
        async with self.step("lock", "Take the deploy lock"):
            await self.take_lock(cfg.lock_timeout)
        async with self.step("live", "Find the live color") as s:
            live = await self.find_live_color()
            self.report.live = live
            self.report.target = target = other_color(live) if live else "blue"
            self.report.first_deploy = bool(self.nginx_service)
            s.detail = f"nginx serves {live}" if live else "nginx serves neither color yet"
            if self.nginx_service:
                s.detail = "first deploy: nginx is not running yet"
        async with self.step("sync", f"Sync {cfg.ref}") as s:
            self.report.sha = await self.sync()
            s.detail = self.report.sha[:12]
        if await self.already_live():
            return
        if cfg.base_compose_file:
            async with self.step("base", "Bring up the base stack") as s:
                s.detail = await self.base_up()
        async with self.step("build", f"Build and start {target}"):
            self.target_touched = True
            await self.choose_color_projects()
            stack = self.compose(target)
            await self.remove_color(target, STOP_TIMEOUT_MIN)
            await self.run_checked(stack.up_color(), f"building and starting {target}", f"fix the build or {stack.file}; the compose output is above", BUILD_TIMEOUT)
        async with self.step("health", f"Health-check {target}") as s:
            report = await wait_healthy(self.host, cfg.health_urls[target], cfg.health_timeout, cfg.health_interval)
            self.report.health = report
            for note in report.notes:
                self.out.info(note)
            s.detail = f"{sum(r.healthy for r in report.results)}/{len(report.results)} URLs healthy"
            if not report.healthy:
                bad = report.failing()[0]
                raise DeployError(
                    f"{bad.url} did not answer 2xx within {cfg.health_timeout}s (last: {bad.last}, {bad.attempts} attempts)",
                    f"check the {target} containers' logs below; raise health-timeout if the app needs longer to start",
                )
        async with self.step("switch", f"Switch nginx to {target}") as s:
            content, previous = await asyncio.gather(
                self.run_checked(commands.read_file(cfg.upstream_path(target)), f"reading {cfg.upstream_file}", f"commit {cfg.upstream_file_for(target)}"),
                self.proxy.read_target(),
            )
            self.previous_upstream = previous
            # Written first: if this run dies before the switch is settled, the next one puts `previous` back.
            await self.host.run(commands.write_file(self.switch_marker), input=json.dumps({"previous": previous, "to": target, "run": self.run_info.url}))
            old_workers: set[int] = set()
            if self.nginx_service:
                s.detail = f"nginx started in {await self.start_nginx(content):.1f}s"
            else:
                await self.proxy.write_target(content)
                old_workers, reload_seconds = await self.proxy.test_and_reload(content, on_reload=self.mark_reloaded)
                s.detail = f"reload took {reload_seconds:.1f}s"
            await self.check_public_url()
            await self.host.run(commands.remove_file(self.switch_marker))
            self.committed = True
            self.report.switched = True
        if not old_workers:
            await self.finish_switch()
            return
        async with self.step("drain", "Drain old nginx workers") as s:
            drained, left = await self.proxy.drain(old_workers, cfg.drain_timeout)
            s.detail = f"{len(old_workers)} old workers gone in {drained:.1f}s" if not left else f"{left} old workers still busy after {drained:.0f}s"
            if left:
                self.warn(f"{left} old nginx workers still had requests in flight after drain-timeout ({cfg.drain_timeout}s); they are cut when {self.report.live} stops", "Drain timeout")
        await self.finish_switch(cfg.drain_timeout - drained)

    async def finish_switch(self, remaining_drain: float = 0) -> None:
        """Stop the color that no longer serves (if any), then record the deploy."""
        if old := self.report.live:
            async with self.step("stop", f"Stop {old}") as s:
                s.detail = f"stop timeout {await self.stop_color(old, remaining_drain)}s"
        async with self.step("record", "Record the deploy"):
            await self.record("success")

    # -- steps ------------------------------------------------------------------------------------

    def mark_reloaded(self) -> None:
        """From the reload on, recovery must switch nginx back, not only put the file back."""
        self.reloaded = True

    async def preflight(self) -> None:
        cfg = self.cfg
        docker, checkout, v2, v1 = await asyncio.gather(
            self.host.run(commands.docker_server_version(), check=False),
            self.host.run(commands.git_is_checkout(cfg.app_dir), check=False),
            self.host.run(commands.compose_detect("v2"), check=False),
            self.host.run(commands.compose_detect("v1"), check=False),
        )
        if docker.status == 127:
            raise DeployError("docker is not installed on the host (or not on the deploy user's PATH)", "install Docker on the host")
        if not docker.ok:
            if "permission denied" in docker.stderr:
                raise DeployError(f"{cfg.username} may not use docker on the host", f"add the user to the docker group: usermod -aG docker {cfg.username} (then log in again)")
            raise DeployError(f"dockerd does not answer on the host: {last_line(docker.stderr)}", "start Docker on the host: systemctl start docker")
        if checkout.stdout.strip() != "true":
            if "dubious ownership" in checkout.stderr:
                raise DeployError(f"app-dir {cfg.app_dir} belongs to another user, so git refuses it", f"deploy as the owner of {cfg.app_dir}, or chown it to {cfg.username}")
            raise DeployError(f"app-dir {cfg.app_dir} is missing or not a git checkout on the host", f"clone the app there: git clone <repo> {cfg.app_dir}")
        variant = commands.choose_compose(v2.ok, v1.ok)
        if variant is None:
            raise DeployError("neither 'docker compose' (v2) nor 'docker-compose' (v1) is on the host", "install the Docker Compose plugin, or docker-compose")
        self.variant = variant
        self.out.info(f"compose: {'docker compose (v2)' if self.variant == 'v2' else 'docker-compose (v1)'}")
        self.nginx = Nginx(self.host, cfg.nginx_container, cfg.upstream_target_path)
        if cfg.nginx_container and not await self.proxy.is_running():
            self.nginx_service = await self.nginx_base_service()
            self.out.info(f"first deploy: nginx container '{cfg.nginx_container}' is not running; it is service '{self.nginx_service}' of {cfg.base_compose_file}, started after the health gate")
        else:
            await self.proxy.check_available()

    async def nginx_base_service(self) -> str:
        """On a host where nothing runs yet, the nginx container is a service of the base stack, which
        this deploy starts; anything else (a typo in nginx-container) is an error."""
        cfg = self.cfg
        text = ""
        if cfg.base_compose_file:
            text = (await self.host.run(commands.read_file(cfg.app_path(cfg.base_compose_file)), check=False)).stdout
        service = service_of_container(text, cfg.nginx_container, cfg.project_name)
        if service is None:
            where = f"and no service of {cfg.base_compose_file} makes a container of that name" if cfg.base_compose_file else "and base-compose-file is empty"
            raise NginxError(
                f"nginx container '{cfg.nginx_container}' is not running on the host, {where}",
                "set nginx-container to the name 'docker ps' shows for nginx (or its container_name in the base compose file), or start it",
            )
        return service

    async def take_lock(self, timeout: int) -> None:
        await self.run_checked(commands.make_dirs(self.state_dir), f"creating {self.state_dir}", "make app-dir writable by the deploy user")
        await self.host.run(commands.write_file(posixpath.join(self.state_dir, ".gitignore")), input="*\n")
        lock_file = posixpath.join(self.state_dir, "lock")
        owner_file = posixpath.join(self.state_dir, "lock.json")
        deadline = time.monotonic() + timeout
        last_note = 0.0
        while True:
            process = await self.host.conn.create_process(commands.shell_line(commands.hold_lock(lock_file), LOCK_MAX_SECONDS))
            line = await process.stdout.readline()
            if line.strip() == "locked":
                self.lock = process
                owner = {**self.run_info.__dict__, "started": _now()}
                await self.host.run(commands.write_file(owner_file), input=json.dumps(owner) + "\n")
                return
            process.close()
            if time.monotonic() >= deadline:
                holder = (await self.host.run(commands.read_file(owner_file), check=False)).stdout.strip()
                raise DeployError(
                    f"another deploy still holds the lock on {self.cfg.app_dir} after {timeout}s (owner: {holder or 'unknown'})",
                    "wait for it to finish, or raise lock-timeout; use concurrency: in the workflow to queue deploys",
                )
            if time.monotonic() - last_note >= 10:
                holder = (await self.host.run(commands.read_file(owner_file), check=False)).stdout.strip()
                self.out.info(f"waiting for the deploy lock, held by {holder or 'another deploy'}")
                last_note = time.monotonic()
            await asyncio.sleep(2)

    async def find_live_color(self) -> Color | None:
        cfg = self.cfg
        if await self.put_back_upstream():
            self.warn(f"a previous run died while {cfg.upstream_target} was set aside for git checkout; it was put back", "Upstream file restored")
        await self.settle_interrupted_switch()
        dump, (blue, green, active_env) = await asyncio.gather(
            self.proxy.dump() if not self.nginx_service else _nothing(),
            asyncio.gather(*(self.host.run(commands.read_file(path), check=False) for path in (cfg.upstream_path("blue"), cfg.upstream_path("green"), cfg.app_path(".active_env")))),
        )
        live = live_color(dump, {"blue": blue.stdout, "green": green.stdout})
        cached = active_env.stdout.strip()
        if cached in COLORS and live and cached != live:
            self.warn(f".active_env says {cached} but nginx serves {live}; trusting nginx (a previous run probably died after the switch)", "Live color drift")
        if live is None and cached in COLORS:
            self.warn(f"nginx serves neither upstream file; .active_env says {cached}, so {cached} is treated as live", "Live color unknown")
            return cached
        return live

    async def sync(self) -> str:
        cfg = self.cfg
        app = cfg.app_dir
        await self.run_checked(commands.git_fetch(app), "git fetch", f"check that {cfg.username} can fetch the app's origin remote in {app} (deploy key, network)")
        sha = ""
        for candidate in commands.ref_candidates(cfg.ref):
            if candidate == "FETCH_HEAD" and not (await self.host.run(commands.git_fetch_ref(app, cfg.ref), check=False)).ok:
                break
            resolved = await self.host.run(commands.git_resolve(app, candidate), check=False)
            if resolved.ok:
                sha = resolved.stdout.strip()
                break
        if not sha:
            raise DeployError(f"ref {cfg.ref} was not found in the origin of {app}", "push the commit first, or give an existing commit, branch or tag as ref")
        await self.check_files(sha)
        async with self.upstream_set_aside():
            await self.run_checked(commands.git_checkout(app, sha), f"git checkout {sha[:12]}", f"check the work tree in {app}")
        return sha

    @property
    def switch_marker(self) -> str:
        return posixpath.join(self.state_dir, "switching")

    async def settle_interrupted_switch(self) -> None:
        """A run that died between writing the upstream target and settling the switch leaves the
        marker. nginx may or may not have loaded the new file (`nginx -T` reads the disk), so the
        upstream it replaced, still served by a running color, is put back, tested and reloaded."""
        marker = await self.host.run(commands.read_file(self.switch_marker), check=False)
        if not marker.ok:
            return
        previous = _json(marker.stdout).get("previous")
        if isinstance(previous, str) and self.nginx_service:
            await self.proxy.write_target(previous)
            self.warn("a previous run died during the nginx switch; the upstream it replaced was put back (nginx is not running)", "Interrupted switch undone")
        elif isinstance(previous, str):
            await self.proxy.restore(previous)
            self.warn("a previous run died during the nginx switch; the upstream it replaced was put back and reloaded", "Interrupted switch undone")
        await self.host.run(commands.remove_file(self.switch_marker))

    async def already_live(self) -> bool:
        """A rerun of a deploy that got as far as the switch: the live color already runs this commit.
        If it is healthy, finish what the earlier run left (stop the other color) instead of redeploying."""
        live = self.report.live
        lines = (await self.host.run(["tail", "-n", "20", self.journal_path], check=False)).stdout.splitlines()
        self.journal_tail = [e for e in map(_json, lines) if e]
        switched = [e for e in self.journal_tail if e.get("result") in ("success", "switched")]
        if not live or not switched or switched[-1].get("to") != live or switched[-1].get("ref") != self.report.sha:
            return False
        async with self.step("already-live", f"Check {live}, which already runs {self.report.sha[:12]}") as s:
            health = await wait_healthy(self.host, self.cfg.health_urls[live], min(self.cfg.health_timeout, 10), 1)
            s.detail = "healthy" if health.healthy else "not healthy: redeploying"
        if not health.healthy:
            return False
        self.report.already_live = True
        self.report.target = live
        self.out.info(f"{self.report.sha[:12]} is already live on {live} and healthy; not redeploying")
        other = other_color(live)
        if from_file(await self.containers(), self.cfg.compose_path(other)):
            async with self.step("stop", f"Finish the earlier switch: stop {other}") as s:
                drained, _ = await self.proxy.drain(await self.proxy.shutting_down(), self.cfg.drain_timeout)
                s.detail = f"drained in {drained:.1f}s"
                await self.stop_color(other, self.cfg.drain_timeout - drained)
            await self.record("success")
        return True

    async def stop_color(self, color: Color, remaining_drain: float) -> int:
        """Stop a color that no longer serves; requests still in flight get the rest of the drain window."""
        grace = max(STOP_TIMEOUT_MIN, math.ceil(remaining_drain))
        await self.remove_color(color, grace)
        return grace

    async def check_files(self, sha: str) -> None:
        """Before the checkout changes anything: the files this deploy needs exist in the commit (or,
        untracked, on the host)."""
        cfg = self.cfg
        target = self.report.target
        assert target is not None
        needed = [(cfg.compose_file_for(target), "compose-file"), (cfg.upstream_file_for(target), "upstream-file")]
        if cfg.base_compose_file:
            needed.append((cfg.base_compose_file, "base-compose-file"))
        for path, name in needed:
            in_commit, on_disk = await asyncio.gather(
                self.host.run(commands.git_has_file(cfg.app_dir, sha, path), check=False),
                self.host.run(commands.path_exists(cfg.app_path(path)), check=False),
            )
            if not (in_commit.ok or on_disk.ok):
                raise DeployError(f"{path} does not exist at {sha[:12]} ({name})", f"commit {path}, or set {name} to where the file is")

    @asynccontextmanager
    async def upstream_set_aside(self) -> AsyncIterator[None]:
        """Keep the checkout away from the live upstream file: rename it aside and back (rename keeps
        the inode, so a single-file bind mount still sees it, and git never overwrites it)."""
        target = self.cfg.upstream_target_path
        inside = target.startswith(self.cfg.app_dir + "/")
        if inside and (await self.host.run(commands.path_exists(target), check=False)).ok:
            await self.host.run(commands.move(target, self.upstream_stash))
        try:
            yield
        finally:
            await self.put_back_upstream()

    @property
    def upstream_stash(self) -> str:
        return self.cfg.upstream_target_path + ".bluegreen-live"

    async def put_back_upstream(self) -> bool:
        if not (await self.host.run(commands.path_exists(self.upstream_stash), check=False)).ok:
            return False
        await self.host.run(commands.move(self.upstream_stash, self.cfg.upstream_target_path))
        return True

    async def base_up(self) -> str:
        """Start the base services that do not run; never touch one that does, whatever project made
        it (the previous release ran the base as <name>-base). On a first deploy nginx waits for the switch."""
        cfg = self.cfg
        stack = self.compose("base")
        fix = f"check {cfg.base_compose_file} with 'docker compose config'"
        containers, text = await asyncio.gather(self.containers(), self.run_checked(commands.read_file(stack.file), "reading the base compose file", fix))
        running = from_file(containers, stack.file)
        adopted = sorted({c.service for c in running if c.running and c.project != stack.project})
        if adopted:
            self.out.info(f"base services already running under another project, left as they are: {', '.join(adopted)}")
        up = {c.service for c in running if c.running}
        missing = [s for s in compose_services(text) if s not in up and s != self.nginx_service]
        if missing:
            await self.run_checked(stack.up_base(missing), "base compose up", fix, BUILD_TIMEOUT)
        return f"started {', '.join(missing)}" if missing else "every service already runs"

    async def containers(self, refresh: bool = False) -> list[Container]:
        """The app's containers under any project, listed once per deploy (after the lock, before any change)."""
        if self._containers is None or refresh:
            listing = await self.run_checked(commands.app_containers(self.cfg.app_dir), "listing containers", "check that docker works for the deploy user")
            self._containers = parse_containers(listing)
        return self._containers

    async def choose_color_projects(self) -> None:
        """One project for everything, unless both color files define the same service name: then
        each color runs as <project>-<color>, as the previous release ran them (and can then reach
        the base only through the host or an external network)."""
        blue, green = await asyncio.gather(*(self.host.run(commands.read_file(self.cfg.compose_path(c)), check=False) for c in COLORS))
        shared = shared_names(blue.stdout, green.stdout)
        self.split_colors = bool(shared)
        if shared:
            self.out.info(f"blue and green both define {', '.join(shared)}: each color runs as a project of its own ({self.cfg.project_name}-blue, {self.cfg.project_name}-green)")

    async def remove_color(self, color: Color, stop_timeout: int, refresh: bool = False) -> None:
        """Stop and remove `color`'s containers, whatever project made them, by container: never
        `down`, which would take the network and volumes the color shares with the base."""
        found = from_file(await self.containers(refresh), self.cfg.compose_path(color))
        if not found:
            return
        ids = [c.id for c in found]
        other = sorted({c.project for c in found} - {self.compose(color).project})
        if other:
            self.out.info(f"{color}: adopting containers made by project {', '.join(other)}")
        await self.run_checked(commands.stop_containers(ids, stop_timeout), f"stopping {color}", "stop its containers by hand with docker stop", BUILD_TIMEOUT)
        await self.run_checked(commands.remove_containers(ids), f"removing {color}'s containers", "remove them by hand with docker rm")

    async def start_nginx(self, content: str) -> float:
        """First deploy: write the upstream, then start nginx, which can only start once every host its
        upstreams name exists (on a compose network, the new color's service names)."""
        target = self.cfg.upstream_target_path
        start = time.monotonic()
        await self.host.run(commands.make_dirs(posixpath.dirname(target)))
        await self.proxy.write_target(content)
        self.mark_reloaded()
        await self.run_checked(self.compose("base").up_base([self.nginx_service]), f"starting nginx ({self.nginx_service})", f"check the nginx service in {self.cfg.base_compose_file}", BUILD_TIMEOUT)
        await self.proxy.wait_loaded(content)
        return time.monotonic() - start

    async def check_public_url(self) -> None:
        url = self.cfg.public_url
        if not url:
            return
        last = ""
        async with httpx.AsyncClient(timeout=5) as client:
            for _ in range(5):
                try:
                    response = await client.get(url)
                    last = f"HTTP {response.status_code}"
                    if 200 <= response.status_code < 300:
                        return
                except httpx.HTTPError as err:
                    last = type(err).__name__
                await asyncio.sleep(1)
        raise DeployError(f"public-url {url} did not answer 2xx after the switch (last: {last})", "check the new upstream file: it must point at the new color's ports")

    async def record(self, result: str) -> None:
        cfg = self.cfg
        color = self.report.active_color
        entry: dict[str, object] = {
            "time": _now(),
            "ref": self.report.sha or cfg.ref,
            "from": self.report.live,
            "to": self.report.target,
            "result": result,
            "steps": {s.name: round(s.seconds, 2) for s in self.report.steps},
            "run": self.run_info.url,
        }
        writes = [self.host.run(commands.append_file(self.journal_path), input=json.dumps(entry) + "\n")]
        if color:
            writes.append(self.host.run(commands.write_file(cfg.app_path(".active_env")), input=color + "\n"))
        await asyncio.gather(*writes)
        if self.journal_tail is None:  # failed before the journal was read
            lines = (await self.host.run(["tail", "-n", "5", self.journal_path], check=False)).stdout.splitlines()
            self.journal_tail = [e for e in map(_json, lines[:-1]) if e]
        self.report.journal = [entry, *reversed(self.journal_tail[-4:])]

    # -- failure path -----------------------------------------------------------------------------

    def warn(self, message: str, title: str) -> None:
        self.report.warnings.append(message)
        self.out.warning(message, title)

    def fail(self, message: str, fix: str) -> None:
        self.report.error = message
        self.report.fix = fix
        title = f"Deploy failed at {self.report.failed_step or 'start'}"
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
            if self.committed:
                await self.record("switched")
                return
            if self.previous_upstream is not None:
                if self.reloaded and self.nginx_service:
                    await self.host.run(self.compose("base").stop([self.nginx_service]), check=False, timeout=120)
                    await self.proxy.write_target(self.previous_upstream)
                    self.report.restored.append(f"nginx ({self.nginx_service}) stopped again and {self.cfg.upstream_target} put back: this was the first deploy, nothing served before")
                elif self.reloaded:
                    await self.proxy.restore(self.previous_upstream)
                    self.report.rolled_back = True
                    self.report.restored.append(f"nginx upstream switched back to {self.report.live or 'its previous content'}, reloaded and confirmed")
                else:
                    await self.proxy.write_target(self.previous_upstream)
                    self.report.restored.append(f"upstream file {self.cfg.upstream_target} put back as it was; nginx never loaded the new one")
                await self.host.run(commands.remove_file(self.switch_marker))
            if self.target_touched and target:
                stack = self.compose(target)
                logs = await self.host.run(stack.logs(LOG_TAIL), check=False, timeout=30)
                self.report.logs = self.out.scrub(logs.stdout + logs.stderr)
                self.out.host_output(f"last {LOG_TAIL} log lines of {target}", logs.stdout + logs.stderr)
                # The target never served: a short stop keeps recovery inside the runner's cancel window.
                await self.remove_color(target, TEARDOWN_STOP_TIMEOUT, refresh=True)
                self.report.restored.append(f"{target} containers removed; {self.report.live or 'nothing'} keeps serving")
            if self.report.sha:
                await self.record("failed")
        except (RemoteError, CommandFailed, NginxError, DeployError) as err:
            self.report.restored.append(f"recovery did not finish: {err}")
            self.out.error(f"recovery did not finish: {err}", "Recovery incomplete")

    async def reconnect(self) -> None:
        """The SSH connection dropped mid-deploy (and with it the lock): connect and lock again."""
        self.out.info("the SSH connection dropped; reconnecting to leave the host consistent")
        self.lock = None
        self.remote = await Remote.connect(self.cfg)
        self.nginx = Nginx(self.remote, self.cfg.nginx_container, self.cfg.upstream_target_path)
        await self.take_lock(RECONNECT_LOCK_TIMEOUT)

    async def close(self) -> None:
        if self.lock is not None:
            self.lock.stdin.write_eof()
            self.lock.close()
            self.lock = None
        if self.remote is not None:
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
        proxy = Nginx(remote, config.nginx_container, config.upstream_target_path)
        await proxy.check_available()
        journal = posixpath.join(config.app_path(STATE_DIR), "journal.jsonl")
        reads = [commands.read_file(path) for path in (config.upstream_path("blue"), config.upstream_path("green"), config.app_path(".active_env"))]
        reads += [commands.app_containers(config.app_dir), ["tail", "-n", "5", journal]]
        dump, (blue, green, active_env, listing, recent) = await asyncio.gather(proxy.dump(), asyncio.gather(*(remote.run(argv, check=False) for argv in reads)))
    finally:
        await remote.close()
    containers = parse_containers(listing.stdout)
    return {
        "live-color": live_color(dump, {"blue": blue.stdout, "green": green.stdout}) or "",
        "active-env": active_env.stdout.strip(),
        "containers": {
            stack: sorted(f"{c.name} ({'running' if c.running else 'stopped'})" for c in from_file(containers, file))
            for stack, file in (("base", config.app_path(config.base_compose_file) if config.base_compose_file else ""), ("blue", config.compose_path("blue")), ("green", config.compose_path("green")))
            if file
        },
        "recent-deploys": [e for e in map(_json, reversed(recent.stdout.splitlines())) if e],
    }


async def _nothing() -> str:
    return ""


def _json(line: str) -> dict[str, object]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
