"""Benchmark: where the images come from (build: host against build: runner), on hosts that are
separate machines (lab/hosts.py: their own dockerd and disk), the runner being this machine.

    .venv/bin/python -m bench.images --rounds 3 [--rows abc] [--burn 40]

(a) A one-line change with build: runner, on one host: the bytes the runner sent the host for the
    changed image (the journal's `sent`) and the time of the images step; beside them, the changed
    layer's size and the whole image's.
(b) The small host: one host limited to 1 CPU (its container and its dockerd's), each color with two
    services that build, each with a CPU-bound step (--burn million loop turns of python3, about 4 s
    of one core here for 40; the cache busted every round): the deploy's wall time, and the live
    color's latency (p50, p99) and failed requests during it, 20 GETs a second, with build: host and
    with build: runner (the runner: this 2-core machine, unlimited).
(c) A 3-host fleet: the builds made and the deploy's wall time, with build: host and build: runner.

Prints Markdown tables: medians with min-max over the rounds."""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lab import hosts, lab

from bench.fleet import step_seconds


@dataclass
class Latency:
    """GETs at a steady rate on a background thread; each one's time, and the failures."""

    url: str
    rate: float = 20.0
    times: list[float] = field(default_factory=list)
    failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    response.read()
                self.times.append(time.monotonic() - started)
            except (urllib.error.URLError, OSError):
                self.failed += 1
            self._stop.wait(max(0.0, 1 / self.rate - (time.monotonic() - started)))

    def __enter__(self) -> Latency:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.times)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def spread(values: list[float], unit: str = "s", digits: int = 2) -> str:
    if not values:
        return "—"
    return (
        f"{statistics.median(values):.{digits}f}{unit} ({min(values):.{digits}f}–{max(values):.{digits}f}), "
        f"n={len(values)}"
    )


def deploy(inputs: dict[str, str], app: lab.LabApp, what: str) -> tuple[lab.ActionRun, float]:
    started = time.monotonic()
    run = lab.run_action(inputs, timeout=1800, workspace=app.work)
    wall = time.monotonic() - started
    if run.status != 0:
        raise SystemExit(f"{what} failed:\n{run.log[-3000:]}")
    return run, wall


def one_line_change(host: hosts.Host, key: str, rounds: int) -> list[str]:
    sent, seconds, changed, whole = [], [], [], []
    for n in range(rounds):
        app = hosts.fresh_fleet_app([host])
        try:
            first = app.version(f"a{n}")
            deploy(hosts.fleet_inputs([host], app, first, key, build="runner"), app, "the first runner build")
            second = app.version(f"b{n}")
            run, _ = deploy(hosts.fleet_inputs([host], app, second, key, build="runner"), app, "the one-line change")
            images = hosts.journal_images(host, app)
            sent.append(float(str(images["backend_green"]["sent"])) / 1000)
            seconds += step_seconds(run.summary, "Get green's images")
            change = hosts.layer_change(
                hosts.runner_image(app, "backend_blue", first), hosts.runner_image(app, "backend_green", second)
            )
            changed.append(change.changed / 1000)
            whole.append(change.size / 1e6)
        finally:
            app.teardown()
    return [
        "| measure | median (min–max) |",
        "| --- | --- |",
        f"| bytes the runner sent the host | {spread(sent, ' kB', 1)} |",
        f"| the changed layer (uncompressed) | {spread(changed, ' kB', 1)} |",
        f"| the whole image | {spread(whole, ' MB', 1)} |",
        f"| images step (build once, save, ship, pull) | {spread(seconds)} |",
    ]


BURN = 'RUN python3 -c "sum(i * i for i in range({millions} * 1000000))"\n'


def limit_cpus(host: hosts.Host, cpus: int) -> None:
    """The host's CPUs (0: no limit): its container's, and its own dockerd's containers' (the lab
    host starts them under a cgroup parent of their own, outside its container's)."""
    lab.sh("docker", "update", "--cpus", str(cpus), host.container)
    v1 = Path(f"/sys/fs/cgroup/cpu/bluegreen-lab-{host.name}")
    if Path("/sys/fs/cgroup/cpu").is_dir():
        v1.mkdir(exist_ok=True)
        (v1 / "cpu.cfs_period_us").write_text("100000\n")
        (v1 / "cpu.cfs_quota_us").write_text(f"{cpus * 100000 or -1}\n")
    else:
        v2 = Path(f"/sys/fs/cgroup/bluegreen-lab-{host.name}")
        v2.mkdir(exist_ok=True)
        (v2 / "cpu.max").write_text(f"{cpus * 100000 or 'max'} 100000\n")


def small_host(host: hosts.Host, key: str, rounds: int, burn: int) -> list[str]:
    limit_cpus(host, 1)
    rows: dict[str, dict[str, list[float]]] = {}
    try:
        for n in range(rounds):
            for mode in ("host", "runner") if n % 2 == 0 else ("runner", "host"):
                app = hosts.fresh_fleet_app([host])
                try:
                    app.commit("each service builds on its own", app.own_builds(BURN.format(millions=burn)))
                    sha = app.version(f"s{n}{mode}")
                    with Latency(host.url("/api/v1/")) as load:
                        _, wall = deploy(hosts.fleet_inputs([host], app, sha, key, build=mode), app, f"build: {mode}")
                    figures = rows.setdefault(mode, {})
                    figures.setdefault("wall", []).append(wall)
                    figures.setdefault("p50", []).append(load.quantile(0.5) * 1000)
                    figures.setdefault("p99", []).append(load.quantile(0.99) * 1000)
                    figures.setdefault("failed", []).append(float(load.failed))
                finally:
                    app.teardown()
    finally:
        limit_cpus(host, 0)
    out = [
        "| build | deploy wall time | live p50 during the deploy | live p99 during the deploy | failed requests |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mode, figures in rows.items():
        out.append(
            f"| {mode} | {spread(figures['wall'])} | {spread(figures['p50'], ' ms', 1)} | "
            f"{spread(figures['p99'], ' ms', 1)} | {int(sum(figures['failed']))} |"
        )
    return out


def fleet(targets: list[hosts.Host], key: str, rounds: int) -> list[str]:
    rows: dict[str, dict[str, list[float]]] = {}
    for n in range(rounds):
        for mode in ("host", "runner") if n % 2 == 0 else ("runner", "host"):
            app = hosts.fresh_fleet_app(targets)
            try:
                sha = app.version(f"f{n}{mode}")
                run, wall = deploy(hosts.fleet_inputs(targets, app, sha, key, build=mode), app, f"fleet, build: {mode}")
                # each host's image: with build: host each host built its own, with runner one for all
                builds = float(len({hosts.image_id(h, f"{app.name}-app:blue") for h in targets}))
                figures = rows.setdefault(mode, {})
                figures.setdefault("wall", []).append(wall)
                figures.setdefault("builds", []).append(builds)
                figures.setdefault("step", []).append(max(step_seconds(run.summary, "Build and start blue") or [0.0]))
            finally:
                app.teardown()
    out = [
        "| build | builds made (distinct images) | deploy wall time | longest build-and-start step |",
        "| --- | --- | --- | --- |",
    ]
    for mode, figures in rows.items():
        out.append(
            f"| {mode} | {statistics.median(figures['builds']):.0f} | {spread(figures['wall'])} | "
            f"{spread(figures['step'])} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burn", type=int, default=40, help="million loop turns of each slow build step")
    parser.add_argument("--rows", default="abc", help="which tables: a, b and/or c (default abc)")
    args = parser.parse_args()
    made, key = hosts.start_bench_hosts()
    tables = []
    try:
        if "a" in args.rows:
            tables.append(("(a) a one-line change, build: runner", one_line_change(made[0], key, args.rounds)))
        if "b" in args.rows:
            title = f"(b) a 1-CPU host, 2 services x a CPU-bound build step ({args.burn}M turns)"
            tables.append((title, small_host(made[0], key, args.rounds, args.burn)))
        if "c" in args.rows:
            tables.append(("(c) a 3-host fleet", fleet(made, key, args.rounds)))
    finally:
        for host in made:
            host.stop()
    for title, rows in tables:
        print(f"**{title}**\n")
        print("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
