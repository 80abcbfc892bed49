"""`plan`: what a deploy would do, from the read-only steps alone. Nothing on the host changes: no
lock, no fetch, no journal line, no state folder; only reads (files, git objects, docker ps, nginx -T).
Whether nginx reaches the target's servers can only be known once the target runs: a deploy checks
it then, before the switch.

A deploy's own steps settle what a dead run left (a switch marker, an upstream set aside) and fetch
before they resolve the ref; a plan says that they would, resolves the ref on origin with
`git ls-remote`, and reads the commit's files where the clone already has it (the work tree's, and
says so, where it does not)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from . import commands
from .canary import Held, held_path
from .config import Config, label, other_color
from .deploy import JOURNAL_LOOKBACK, RETIRE_TITLE, earlier_commits, own_files, use_commit, use_host
from .errors import DeployError
from .health import insecure_public_url
from .journal import STATE_DIR, Journal, last_switch
from .lock import lock_status
from .nginx import Nginx, NginxError
from .preflight import Preflight
from .remote import CommandFailed, Remote, RemoteError
from .report import EXIT_FAILED, EXIT_OK, Reporter
from .stacks import Stacks
from .switch import Switch
from .sync import Checkout, relative_to


@dataclass
class Plan:
    host: str
    lines: list[str] = field(default_factory=list)
    verdict: str = ""  # what a deploy would do, in a sentence
    refused: str = ""  # why a deploy would be refused, and the fix ("" if it would go ahead)
    unverified: list[str] = field(default_factory=list)  # what only the deploy itself can check
    notes: list[str] = field(default_factory=list)  # warnings the read-only steps gave

    def markdown(self) -> str:
        lines = [f"### Plan for {self.host}: nothing was changed", "", *(f"- {line}" for line in self.lines), ""]
        lines += [f"> {note}" for note in self.notes] + ([""] if self.notes else [])
        lines.append(
            f"**{'A deploy would be refused' if self.refused else 'Verdict'}:** {self.refused or self.verdict}"
        )
        if self.unverified and not self.refused:
            lines.append(f"\nNot checked before the deploy: {'; '.join(self.unverified)}.")
        return "\n".join(lines) + "\n"


class Planner:
    def __init__(self, config: Config) -> None:
        self.cfg = config
        self.plan = Plan(f"{config.username}@{label(config.host, config.port)}")
        if config.insecure_skip_host_key_check:
            self.note("the host key is not checked (insecure-skip-host-key-check: true)")
        if config.public_url and config.public_url_insecure:
            self.note(insecure_public_url(config.public_url))

    def say(self, line: str) -> None:
        self.plan.lines.append(line)

    def note(self, message: str, _title: str = "") -> None:
        self.plan.notes.append(message)

    async def run(self) -> Plan:
        """Connect, and plan; a deploy's refusal becomes the plan's verdict, not an exception."""
        remote = await Remote.connect(self.cfg)
        try:
            await self.steps(remote)
        except (DeployError, NginxError) as err:  # what a deploy would fail on, before it changed anything
            self.plan.refused = f"{err}. Fix: {err.fix}" if err.fix else str(err)
        except CommandFailed as err:  # a read failed or timed out on the host: no verdict
            self.plan.refused = f"the plan could not finish: {err}"
        finally:
            await remote.close()
        return self.plan

    async def steps(self, remote: Remote) -> None:
        cfg = self.cfg
        proxy = Nginx(remote, cfg.nginx_container, cfg.upstream_target_path, cfg.nginx_sudo)
        switch = Switch(remote, proxy, cfg.app_dir, cfg.upstream_target)
        preflight = Preflight(remote, cfg, proxy, lambda _: None, self.note)
        stacks = Stacks(remote, cfg, lambda _: None)
        git = Checkout(remote, cfg)
        facts = await preflight.check_host()
        use_host(stacks, facts)
        nginx = f"the container {cfg.nginx_container}" if cfg.nginx_container else "on the host"
        self.say(
            f"compose: {'docker compose (v2)' if facts.compose == 'v2' else 'docker-compose (v1)'}; nginx: {nginx}"
        )

        lock, interrupted, set_aside, journal, head = await asyncio.gather(
            lock_status(remote, cfg.app_path(STATE_DIR)),
            switch.interrupted(),
            remote.run(commands.path_exists(switch.stash), check=False),
            Journal(remote, cfg.app_dir).tail(JOURNAL_LOOKBACK),
            git.head(),
        )
        if lock.get("held"):
            self.say(f"lock: held by {lock.get('url') or 'another run'}; a deploy would wait up to {cfg.lock_timeout}s")
        if interrupted or set_aside.ok:
            self.say("a dead run left " + ("an unsettled switch" if interrupted else "the upstream file set aside")
                     + "; a deploy settles it first, so the live color below may change")  # fmt: skip

        held = Held.parse((await remote.run(commands.read_file(held_path(cfg)), check=False)).stdout)
        live = await preflight.current_live(not facts.nginx_service, held)
        if held is not None and preflight.split_loaded:
            self.say(f"canary: {held.ref[:12]} holds {held.share}% on {held.target} since {held.since}")
            raise DeployError(
                f"a canary of {held.ref[:12]} is held at {held.share}%: a deploy would be refused",
                "finish it first: run the action with command: promote or command: abort",
            )
        target = other_color(live) if live else "blue"
        if facts.nginx_service:
            self.say(f"first deploy: nginx is not running; a deploy builds {target} and starts nginx on it")
        else:
            self.say(f"live: nginx serves {live or 'neither color'}; a deploy builds {target} and switches to it")

        sha, how, fetched = await git.resolve_on_origin(cfg.ref)
        at = sha if fetched else head
        where = "" if fetched else f" (not fetched yet: the files below are read at the checkout, {head[:12]})"
        self.say(f"ref {cfg.ref}: {how} at {sha[:12]}{where}")
        if not fetched:
            origin = f"that origin has commit {sha[:12]}, and " if how == "commit" else ""
            self.plan.unverified.append(f"{origin}the files of {sha[:12]}, which the host's clone does not have yet")
        switched = last_switch(journal) or {}
        if live and (switched.get("to"), switched.get("ref")) == (live, sha):
            self.say(
                f"the journal says {live} already runs {sha[:12]}: a deploy checks it is healthy and only finishes"
            )

        current = await use_commit(git, stacks, preflight, at, target, earlier_commits(head, journal, at))
        built = sorted(current[target].built)
        if pulled := current[target].pulled:
            images = ", ".join(sorted(set(pulled.values())))
            login = f", logged in to {cfg.registry or 'Docker Hub'} as {cfg.registry_username}" * bool(
                cfg.registry_username
            )
            self.say(f"images: {images}, pull: {cfg.pull}{login}")
        where = " once on the runner, shipped to the host over SSH" if cfg.build == "runner" and built else ""
        self.say(
            f"build{where}: {', '.join(built) or 'nothing (every service of ' + target + ' uses an image)'}; "
            f"start {', '.join(current[target].services)}"
        )
        if cfg.base_compose_file:
            running = {c.service for c in await stacks.of("base") if c.running}
            missing = [s for s in current["base"].services if s not in running and s != facts.nginx_service]
            self.say(f"base: start {', '.join(missing)}" if missing else "base: every service runs; none is touched")
        self.say(f"health: {' '.join(cfg.health_urls[target])} within {cfg.health_timeout}s")
        if cfg.pre_switch_command:
            service, argv = cfg.pre_switch_for(target)
            self.say(f"pre-switch-command: {' '.join(argv)} in {service}")
        if cfg.strategy == "canary" and live and not facts.nginx_service:
            plan = cfg.canary
            steps = ", ".join(f"{share}%" for share in plan.steps) + (", then held" if plan.hold else "")
            self.say(
                f"canary: {steps} of requests to {target}, {plan.seconds}s each; aborted over {plan.max_5xx:g}% 5xx "
                f"(and worse than {live}) or under {plan.min_requests} responses"
            )
        self.say(
            f"switch: {cfg.upstream_file_for(target)} becomes {cfg.upstream_target} once nginx reaches its servers "
            f"(checked when {target} runs), then nginx reloads"
        )
        if live:
            retire = RETIRE_TITLE[cfg.keep_previous].rstrip(":").lower()
            self.say(f"then: drain the old nginx workers (up to {cfg.drain_timeout}s), and {retire} {live}")

        if fetched:
            await git.check_host_files(sha, relative_to(cfg.app_dir, proxy.target))
        else:
            self.say("untracked files in the commit's way: checked once it is fetched")
        changed = await git.own_half_checkout(await git.changes(own_files(cfg.app_dir, proxy.target)))
        if changed:
            kept = {"refuse": "refuse the deploy", "stash": "stash them", "discard": "discard them"}
            self.say(f"host changes to {', '.join(changed[:10])}: a deploy would {kept[cfg.host_changes]}")
            if cfg.host_changes == "refuse":
                raise DeployError(
                    f"the host has changes to tracked files in {cfg.app_dir}: {', '.join(changed[:10])}",
                    "commit them, or stash them on the host (git stash), or set host-changes: stash",
                )
        self.plan.verdict = f"a deploy would switch {live or 'nothing'} → {target} at {sha[:12]}"


async def plan_fleet(config: Config, out: Reporter) -> int:
    """Each host's plan, planned at once, shown in the summary; the exit status: EXIT_OK if a deploy
    would go ahead on every host, EXIT_FAILED if it would be refused on one, or a host cannot be
    reached (nothing changed either way)."""
    plans = await asyncio.gather(
        *(Planner(config.for_host(i)).run() for i in range(len(config.hosts))), return_exceptions=True
    )
    status = EXIT_OK
    for (host, port), plan in zip(config.hosts, plans, strict=True):
        if isinstance(plan, BaseException):
            if not isinstance(plan, (RemoteError, OSError)):
                raise plan
            out.error(f"{host}:{port}: {plan}", "Plan failed")
            status = EXIT_FAILED
            continue
        out.summary(plan.markdown())
        if plan.refused:
            out.error(f"{plan.host}: a deploy would be refused: {plan.refused}", "Plan: a deploy would be refused")
            status = EXIT_FAILED
    return status
