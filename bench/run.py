"""Benchmark: the action against the seed's script (bench/seed-deploy.sh), on the same lab.

    .venv/bin/python -m bench.run --rounds 5 --bad-upstream 5 --deploys 10

First, per shape (Compose v1 and v2, the app on the host network and on the project's bridge
network), medians with their spread:
- wall time of a warm deploy without load, the two tools interleaved round by round, each on its
  own app; the action's time is its whole `docker run`, container start included;
- the bad-upstream case: a commit whose backend upstream nginx can connect to but that answers 404.
  For how long do clients get errors? (the action switches back; the seed's script never does).
Then, per shape, the action's rollback (to the kept, stopped previous color) against a redeploy of
the same old commit (a build, with a warm build cache: a lower bound for a real build).
Then, on Compose v1, N consecutive deploys under constant load (bench/load.py) per tool and app
variant (graceful on SIGTERM / exits at once on SIGTERM on the host network; graceful on the bridge
network, the seed's real layout), and the drift case (the host as a run that died right after the
reload leaves it). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import operator
import shlex
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import docker
from lab import lab

from bench.load import Counts, Load

SEED_SCRIPT = Path(__file__).parent / "seed-deploy.sh"


@dataclass
class Row:
    tool: str
    case: str
    deploys: int = 0
    deploy_failures: int = 0
    counts: Counts = field(default_factory=Counts)
    walls: list[float] = field(default_factory=list)
    switches: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the last line a failed deploy printed


class Tool:
    name = ""

    def __init__(self, host: lab.SshHost) -> None:
        self.host = host

    def deploy(self, app: lab.LabApp, sha: str) -> str | None:
        """Deploy; None on success, else the last line of its error output."""
        raise NotImplementedError


class Action(Tool):
    name = "bluegreen-action"

    def deploy(self, app: lab.LabApp, sha: str) -> str | None:
        run = lab.run_action(lab.lab_inputs(self.host, app, sha, health_interval="2"))
        errors = [line for line in run.stdout.splitlines() if line.startswith("::error")]
        return None if run.status == 0 else (errors or ["failed"])[0]


class Seed(Tool):
    name = "seed script"

    def __init__(self, host: lab.SshHost) -> None:
        super().__init__(host)
        self.key = host.root / "bench_key"
        self.key.write_text(host.key)
        self.key.chmod(0o600)
        self.known = host.root / "bench_known_hosts"
        self.known.write_text(host.known_hosts + "\n")

    def deploy(self, app: lab.LabApp, sha: str) -> str | None:
        values = {
            "NGINX": app.nginx_container,
            "BLUE_URLS": app.health_urls("blue"),
            "GREEN_URLS": app.health_urls("green"),
            "COMPOSE": " ".join(lab.compose_command()),
        }
        env = " ".join(f"{name}={shlex.quote(value)}" for name, value in values.items())
        remote = f"{env} bash {shlex.quote(str(app.app_dir / 'scripts/blue-green-deploy.sh'))}"
        ssh = [
            "ssh",
            "-q",
            "-i",
            str(self.key),
            "-p",
            str(self.host.port),
            "-o",
            f"UserKnownHostsFile={self.known}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
        ]
        done = subprocess.run(
            [*ssh, f"{lab.DEPLOY_USER}@127.0.0.1", remote], stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["failed"])[-1]


def new_app(exit_on_sigterm: bool, variant: str = "host") -> lab.LabApp:
    """A fresh app with the seed's script committed, set up as the seed's script leaves a host: green v1 live."""
    app = lab.make_app(exit_on_sigterm=exit_on_sigterm, variant=variant)
    app.commit("the seed's deploy script", {"scripts/blue-green-deploy.sh": SEED_SCRIPT.read_text()})
    app.pull()
    app.bootstrap_seed("green")
    return app


class Poller:
    """Calls `probe` every `pause` seconds on a background thread while the block runs, until it
    returns True."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def probe(self) -> bool:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set() and not self.probe():
            self._stop.wait(self.pause)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


class HealthWatch(Poller):
    """Notes when the new version first answers on its color's own port: the health-pass moment."""

    def __init__(self, url: str, version: str) -> None:
        super().__init__(0.05)
        self.url, self.version, self.at = url, version, 0.0

    def probe(self) -> bool:
        try:
            with lab.urllib_open(self.url, timeout=2) as response:
                if response.status == 200 and f'"version": "{self.version}"' in response.read().decode():
                    self.at = time.monotonic()
        except OSError:
            pass
        return bool(self.at)


def served(app: lab.LabApp) -> dict[str, str]:
    try:
        with lab.urllib_open(app.public_url("/api/v1/")) as response:
            body: dict[str, str] = json.loads(response.read())
            return body
    except OSError:
        return {}


def served_color(app: lab.LabApp) -> str:
    return served(app).get("color", "")


def version_served(app: lab.LabApp, version: str) -> bool:
    """Whether `version` serves once the deploy returned (a failed seed deploy may still have switched)."""
    try:
        lab.wait_for(lambda: served(app).get("version") == version, f"{version} to be served", 5)
    except TimeoutError:
        return False
    return True


def series(tool: Tool, exit_on_sigterm: bool, deploys: int, variant: str = "host") -> Row:
    case = "exits at once on SIGTERM" if exit_on_sigterm else "graceful on SIGTERM"
    row = Row(tool.name, case + (", bridge network" if variant == "bridge" else ""))
    app = new_app(exit_on_sigterm, variant)
    try:
        with Load(app.ports["PUBLIC_PORT"]) as load:
            for i in range(deploys):
                version = f"v{i + 2}"
                target = "blue" if served_color(app) == "green" else "green"
                sha = app.version(version)
                with HealthWatch(app.health_urls(target).split()[0], version) as watch:
                    start = time.monotonic()
                    error = tool.deploy(app, sha)
                    row.walls.append(time.monotonic() - start)
                row.deploys += 1
                row.deploy_failures += error is not None
                if error is not None:
                    row.errors.append(f"{version}: {error}")
                if version_served(app, version):
                    # the load's own requests may hang for a while (a seed deploy that recreated the live color)
                    with contextlib.suppress(TimeoutError):
                        lab.wait_for(
                            functools.partial(operator.contains, load.counts.first_seen, version),
                            f"{version} to be served",
                            20,
                        )
                if watch.at and version in load.counts.first_seen:
                    row.switches.append(load.counts.first_seen[version] - watch.at)
        row.counts = load.counts
    finally:
        app.teardown()
    return row


def drift(tool: Tool) -> Row:
    """The host as a run that died right after the reload leaves it: blue serves, green still runs,
    .active_env still says green. Then one deploy under load."""
    row = Row(tool.name, "drift: died after reload")
    app = new_app(False)
    try:
        lab.as_deploy(
            *lab.compose_command(), "--file", "docker-compose.blue.yml", "up", "-d", "--build", cwd=app.app_dir
        )
        app.wait_ready("blue")
        (app.app_dir / "nginx/conf.d/upstream.conf").write_text((app.app_dir / "nginx/upstream.blue.conf").read_text())
        app.reload_nginx()
        lab.wait_for(lambda: served_color(app) == "blue", "nginx to serve blue")
        with Load(app.ports["PUBLIC_PORT"]) as load:
            sha = app.version("v2")
            start = time.monotonic()
            error = tool.deploy(app, sha)
            row.walls.append(time.monotonic() - start)
            row.deploys, row.deploy_failures = 1, int(error is not None)
            lab.wait_for(lambda: "v2" in load.counts.first_seen, "v2 to be served", 10)
        row.counts = load.counts
    finally:
        app.teardown()
    return row


@dataclass
class Figure:
    """One measure for both tools on one shape: the samples, and how many deploys failed."""

    measure: str
    shape: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def spread(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):.2f}s ({min(values):.2f}–{max(values):.2f})"


def walltime(tools: list[Tool], rounds: int, compose: str, variant: str) -> Figure:
    """Warm-cache deploys without load, interleaved: each round deploys with both tools, in turn
    (the order alternates), each on its own app; the action's time includes its container start."""
    figure = Figure("deploy wall time, warm, no load", f"compose {compose}, {variant} network")
    lab.use_compose(compose)
    apps = {tool.name: new_app(False, variant) for tool in tools}
    try:
        interleaved(figure, tools, apps, rounds, "w")
    finally:
        for app in apps.values():
            app.teardown()
    return figure


def interleaved(figure: Figure, tools: list[Tool], apps: dict[str, lab.LabApp], rounds: int, prefix: str) -> None:
    """A warm-up deploy per tool, then `rounds` rounds of one deploy each, the order alternating
    round by round, each timed into `figure`. Each version is its app's own, so that no build is a
    cache hit on what the other tool's app just built."""
    for tool in tools:
        tool.deploy(apps[tool.name], apps[tool.name].version(f"warm-up-{apps[tool.name].name}"))
    for i in range(rounds):
        for tool in tools if i % 2 == 0 else list(reversed(tools)):
            app = apps[tool.name]
            sha = app.version(f"{prefix}{i}-{app.name}")
            start = time.monotonic()
            error = tool.deploy(app, sha)
            figure.samples.setdefault(tool.name, []).append(time.monotonic() - start)
            figure.failed[tool.name] = figure.failed.get(tool.name, 0) + (error is not None)


class FailureWindow(Poller):
    """GETs every 10 ms; notes when answers fail."""

    def __init__(self, url: str) -> None:
        super().__init__(0.01)
        self.url = url
        self.failed_at: list[float] = []

    def probe(self) -> bool:
        try:
            with lab.urllib_open(self.url, timeout=5) as response:
                response.read()
        except OSError:
            self.failed_at.append(time.monotonic())
        return False

    def seconds(self) -> float:
        return self.failed_at[-1] - self.failed_at[0] if self.failed_at else 0.0


def bad_upstream(tools: list[Tool], rounds: int, compose: str, variant: str, watch: float = 10.0) -> Figure:
    """A commit whose backend upstream nginx can connect to (the db) but that answers 404: how long do
    clients get errors? The action switches back; the seed's script never notices, so it is deployed
    once and watched for `watch` seconds."""
    figure = Figure("bad upstream: 5xx window", f"compose {compose}, {variant} network")
    lab.use_compose(compose)
    for tool in tools:
        app = new_app(False, variant)
        try:
            for i in range(rounds if isinstance(tool, Action) else 1):
                target = "blue" if served_color(app) == "green" else "green"
                good = (app.work / f"nginx/upstream.{target}.conf").read_text()
                bad = good.replace(app.server(f"backend_{target}"), app.server("db"))
                sha = app.commit(f"bad upstream {i}", {"app/VERSION": f"b{i}\n", f"nginx/upstream.{target}.conf": bad})
                with FailureWindow(app.public_url("/api/v1/")) as window:
                    tool.deploy(app, sha)
                    if not isinstance(tool, Action):
                        time.sleep(watch)  # how long the errors last is the measure: there is nothing to poll for
                figure.samples.setdefault(tool.name, []).append(window.seconds())
                app.commit(f"good upstream {i}", {f"nginx/upstream.{target}.conf": good})
            if not isinstance(tool, Action):
                figure.notes[tool.name] = f"never switched back: errors until the end of the {watch:.0f}s watched"
        finally:
            app.teardown()
    return figure


def timed(inputs: dict[str, str]) -> float:
    start = time.monotonic()
    run = lab.run_action(inputs)
    if run.status != 0:
        raise RuntimeError(f"the action failed in the benchmark: {run.log[-2000:]}")
    return time.monotonic() - start


def rollback_vs_redeploy(host: lab.SshHost, rounds: int, compose: str, variant: str) -> Figure:
    """Rollback to the color the last deploy left (kept stopped), against a redeploy of that color's
    commit. Each round: roll back (timed), roll forward again, redeploy the old commit (timed);
    the host ends as it began, with the colors swapped."""
    figure = Figure("rollback vs redeploy of the old commit", f"compose {compose}, {variant} network")
    lab.use_compose(compose)
    app = new_app(False, variant)
    try:
        shas = [app.version("r1"), app.version("r2")]
        for sha in shas:
            timed(lab.lab_inputs(host, app, sha))
        rollback = lab.lab_inputs(host, app, "", command="rollback")
        for _ in range(rounds):
            figure.samples.setdefault("rollback", []).append(timed(rollback))
            old = served(app)["version"]
            timed(rollback)  # forward again
            sha = shas[["r1", "r2"].index(old)]
            figure.samples.setdefault("redeploy", []).append(timed(lab.lab_inputs(host, app, sha)))
    finally:
        app.teardown()
    return figure


def slow_builds(tools: list[Tool], rounds: int, seconds: int, compose: str) -> Figure:
    """Two services per color, each with a build step of `seconds`, the cache busted every round (a
    new VERSION before the step): the seed's builds and those of Compose v1 run one after another;
    the action's run in parallel on both Composes. Interleaved rounds, each tool on its own app."""
    figure = Figure(f"deploy wall time, 2 services x {seconds}s build step, cache busted", f"compose {compose}")
    lab.use_compose(compose)
    step = f"RUN sleep {seconds}\n"
    apps = {tool.name: new_app(False) for tool in tools}
    try:
        for app in apps.values():
            app.commit("each service builds on its own", app.own_builds(step))
        interleaved(figure, tools, apps, rounds, "b")
    finally:
        for app in apps.values():
            app.teardown()
    return figure


def slow_build_table(figures: list[Figure], tools: list[Tool]) -> str:
    """One row per Compose: each tool's median with its spread, the action's ratio to the seed on the
    same Compose, and to the seed on v1 (what the seed's host runs)."""
    action, seed = (tool.name for tool in tools)
    on_v1 = next((f.samples.get(seed, []) for f in figures if f.shape == "compose v1"), [])
    out = [
        f"| measure | shape | {action}: median (min–max) | {seed}: median (min–max) | ratio, same Compose | "
        "ratio to the seed on v1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for f in figures:
        a, s = f.samples.get(action, []), f.samples.get(seed, [])
        same = f"{statistics.median(a) / statistics.median(s):.2f}" if a and s else "—"
        to_v1 = f"{statistics.median(a) / statistics.median(on_v1):.2f}" if a and on_v1 else "—"
        failed = "".join(f", {f.failed[n]} failed" for n in (action, seed) if f.failed.get(n))
        cells = [f.measure, f.shape, f"{spread(a)}, n={len(a)}", f"{spread(s)}, n={len(s)}{failed}", same, to_v1]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def image_ids() -> set[str]:
    return set(
        subprocess.run(["docker", "image", "ls", "-q", "--no-trunc"], capture_output=True, text=True).stdout.split()
    )


@dataclass
class Disk:
    tool: str
    deploys: int
    left: int  # images the app left on the host
    used: int  # of which its live and kept containers use


def disk(tool: Tool, deploys: int) -> Disk:
    """`deploys` deploys, each adding a layer (a new VERSION); then the images the app left on the
    host (new since before its first build) against those its containers use."""
    lab.use_compose("v1")
    before = image_ids()
    app = new_app(False)
    try:
        for i in range(deploys):
            tool.deploy(app, app.version(f"d{i}-{app.name}"))  # a layer no other app's build has made
        client = docker.from_env()
        containers = client.containers.list(all=True, filters={"label": f"com.docker.compose.project={app.name}"})
        used = {c.image.id for c in containers} - before
        return Disk(tool.name, deploys, len(image_ids() - before), len(used))
    finally:
        app.teardown()


def disk_table(rows: list[Disk]) -> str:
    out = [
        "| tool | deploys, each a new layer | images the app left on the host | of which its containers use |",
        "| --- | --- | --- | --- |",
    ]
    out += [f"| {r.tool} | {r.deploys} | {r.left} | {r.used} |" for r in rows]
    return "\n".join(out)


def rollback_table(figures: list[Figure]) -> str:
    out = [
        "| shape | rollback (kept stopped): median (min–max) | redeploy of the old commit (warm cache) | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for f in figures:
        rb, rd = f.samples.get("rollback", []), f.samples.get("redeploy", [])
        ratio = f"{statistics.median(rb) / statistics.median(rd):.2f}" if rb and rd else "—"
        out.append(f"| {f.shape} | {spread(rb)}, n={len(rb)} | {spread(rd)}, n={len(rd)} | {ratio} |")
    return "\n".join(out)


def figures_table(figures: list[Figure], tools: list[Tool]) -> str:
    action, seed = (tool.name for tool in tools)
    out = [
        f"| measure | shape | {action}: median (min–max) | {seed}: median (min–max) | ratio of medians |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in figures:
        cells = []
        for name in (action, seed):
            cell = f"{spread(f.samples.get(name, []))}, n={len(f.samples.get(name, []))}"
            if f.failed.get(name):
                cell += f", {f.failed[name]} failed"
            cells.append(cell + (f"; {f.notes[name]}" if name in f.notes else ""))
        a, s = f.samples.get(action), f.samples.get(seed)
        ratio = "—"
        if a and s and not f.failed.get(seed) and seed not in f.notes:
            ratio = f"{statistics.median(a) / statistics.median(s):.2f}"
        out.append(f"| {f.measure} | {f.shape} | {cells[0]} | {cells[1]} | {ratio} |")
    return "\n".join(out)


def table(rows: list[Row]) -> str:
    out = [
        "| tool | app variant | deploys (failed) | failed requests | retried on keep-alive | keep-alive resets | "
        "long requests cut / done | deploy wall time (mean) | switch time (mean) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        c = r.counts
        switch = f"{statistics.mean(r.switches):.2f}s" if r.switches else "—"
        out.append(
            f"| {r.tool} | {r.case} | {r.deploys} ({r.deploy_failures}) | {c.failed} of {c.ok + c.failed} | "
            f"{c.retried} | {c.keepalive_resets} "
            f"| {c.long_cut} / {c.long_ok + c.long_cut} | {statistics.mean(r.walls):.1f}s | {switch} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deploys", type=int, default=20, help="consecutive deploys per tool and variant (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per shape for wall time (default 5)")
    parser.add_argument("--bad-upstream", type=int, default=5, help="bad-upstream deploys of the action per shape")
    parser.add_argument("--rollbacks", type=int, default=3, help="rollback vs redeploy rounds per shape (default 3)")
    parser.add_argument(
        "--slow-builds", type=int, default=3, help="interleaved rounds of the slow-build row (default 3)"
    )
    parser.add_argument(
        "--build-seconds", type=int, default=6, help="each service's build step in that row (default 6)"
    )
    parser.add_argument("--disk", type=int, default=6, help="deploys per tool for the disk row (default 6)")
    args = parser.parse_args()
    lab.build_action_image()
    host = lab.start_sshd()
    rows: list[Row] = []
    figures: list[Figure] = []
    rollbacks: list[Figure] = []
    builds: list[Figure] = []
    disks: list[Disk] = []
    try:
        tools: list[Tool] = [Action(host), Seed(host)]
        shapes = [(compose, variant) for compose in lab.COMPOSE_VARIANTS for variant in lab.VARIANTS]
        if args.rounds:
            figures += [walltime(tools, args.rounds, compose, variant) for compose, variant in shapes]
        if args.bad_upstream:
            figures += [bad_upstream(tools, args.bad_upstream, compose, variant) for compose, variant in shapes]
        if args.rollbacks:
            rollbacks = [rollback_vs_redeploy(host, args.rollbacks, compose, variant) for compose, variant in shapes]
        if args.slow_builds:
            builds = [slow_builds(tools, args.slow_builds, args.build_seconds, c) for c in lab.COMPOSE_VARIANTS]
        if args.disk:
            disks = [disk(tool, args.disk) for tool in tools]
        if args.deploys:
            lab.use_compose("v1")
            rows = [series(tool, variant, args.deploys) for variant in (False, True) for tool in tools]
            rows += [series(tool, False, args.deploys, "bridge") for tool in tools]
            rows += [drift(tool) for tool in tools]
    finally:
        host.stop()
    if figures:
        print(figures_table(figures, tools))
    if rollbacks:
        print()
        print(rollback_table(rollbacks))
    if builds:
        print()
        print(slow_build_table(builds, tools))
    if disks:
        print()
        print(disk_table(disks))
    if rows:
        print()
        print(table(rows))
    for r in rows:
        if r.counts.errors:
            print(f"\n{r.tool}, {r.case}: first request errors: {r.counts.errors[:5]}")
        if r.errors:
            print(f"\n{r.tool}, {r.case}: failed deploys: {r.errors[:5]}")


if __name__ == "__main__":
    main()
