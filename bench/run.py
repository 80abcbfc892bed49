"""Benchmark: the action against the seed's script (bench/seed-deploy.sh), under identical load.

    .venv/bin/python -m bench.run --deploys 20

For each tool and app variant (graceful on SIGTERM / exits at once on SIGTERM, on the host network;
graceful on the project's bridge network, the seed's real layout) it makes a fresh lab app, sets
the host up the way the seed's script does (green v1 live), then runs N consecutive deploys under
constant load (bench/load.py). Then the drift case (the host as a run that died right
after the reload leaves it), and a no-load warm-cache wall time comparison. Prints a Markdown table.
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


class HealthWatch:
    """Notes when the new version first answers on its color's own port: the health-pass moment."""

    def __init__(self, url: str, version: str) -> None:
        self.url, self.version, self.at = url, version, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and not self.at:
            try:
                with lab.urllib_open(self.url, timeout=2) as response:
                    if response.status == 200 and f'"version": "{self.version}"' in response.read().decode():
                        self.at = time.monotonic()
            except OSError:
                pass
            self._stop.wait(0.05)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


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
        app.nginx("-s", "reload")
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


def walltime(tool: Tool, deploys: int) -> list[float]:
    """Warm-cache deploys without load."""
    app = new_app(False)
    walls = []
    try:
        tool.deploy(app, app.version("warm-up"))
        for i in range(deploys):
            sha = app.version(f"w{i}")
            start = time.monotonic()
            tool.deploy(app, sha)
            walls.append(time.monotonic() - start)
    finally:
        app.teardown()
    return walls


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
    parser.add_argument(
        "--walltime-deploys", type=int, default=3, help="no-load deploys per tool for the wall time ratio (default 3)"
    )
    args = parser.parse_args()
    lab.build_action_image()
    lab.use_compose("v1")  # the seed's script calls docker-compose (v1)
    host = lab.start_sshd()
    try:
        tools: list[Tool] = [Action(host), Seed(host)]
        rows = [series(tool, variant, args.deploys) for variant in (False, True) for tool in tools]
        rows += [series(tool, False, args.deploys, "bridge") for tool in tools]
        rows += [drift(tool) for tool in tools]
        walls = {tool.name: statistics.mean(walltime(tool, args.walltime_deploys)) for tool in tools}
    finally:
        host.stop()
    print(table(rows))
    ratio = walls[Action.name] / walls[Seed.name]
    print(
        f"\nWarm-cache deploy without load, mean of {args.walltime_deploys}: action {walls[Action.name]:.2f}s, seed "
        f"script {walls[Seed.name]:.2f}s, ratio {ratio:.2f}"
    )
    for r in rows:
        if r.counts.errors:
            print(f"\n{r.tool}, {r.case}: first request errors: {r.counts.errors[:5]}")
        if r.errors:
            print(f"\n{r.tool}, {r.case}: failed deploys: {r.errors[:5]}")


if __name__ == "__main__":
    main()
