"""Benchmark: a fleet deploy on 1, 2 and 3 separate hosts (lab/hosts.py), batch-size 1 and all.

    .venv/bin/python -m bench.fleet --rounds 3

Each round is a fresh app, green live on every host, then the action deploys a new version (a
build on every host). Prints a Markdown table: the action's whole `docker run`, median and spread;
what each host past the first adds to the one-host time; and, from the job summary, the longest
build + health-check among the hosts and the sum of the switches. Build and health-check run on
every host at once, so a host more should cost about one switch, not one build."""

from __future__ import annotations

import argparse
import re
import statistics
import time

from lab import hosts, lab


def step_seconds(summary: str, title: str) -> list[float]:
    """Each host's duration of the step whose title starts with `title`, from the summary's tables."""
    return [float(m) for m in re.findall(rf"\| {re.escape(title)}[^|]*\| [^|]+\| ([0-9.]+)s \|", summary)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    made, key = hosts.start_bench_hosts()
    results: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    try:
        for _ in range(args.rounds):
            for count in (1, 2, 3):
                for batch in ("1", "100%"):
                    if count == 1 and batch != "1":
                        continue  # one host: the same deploy
                    targets = made[:count]
                    app = hosts.fresh_fleet_app(targets)
                    sha = app.version("v2")
                    started = time.monotonic()
                    run = lab.run_action(hosts.fleet_inputs(targets, app, sha, key, batch_size=batch), timeout=900)
                    wall = time.monotonic() - started
                    if run.status != 0:
                        raise SystemExit(f"deploy failed on {count} hosts, batch-size {batch}:\n{run.log}")
                    builds = [
                        b + h
                        for b, h in zip(
                            step_seconds(run.summary, "Build and start blue"),
                            step_seconds(run.summary, "Health-check blue"),
                            strict=True,
                        )
                    ]
                    switches = step_seconds(run.summary, "Switch nginx to blue")
                    results.setdefault((count, batch), []).append((wall, max(builds), sum(switches)))
                    app.teardown()
    finally:
        for host in made:
            host.stop()
    one = statistics.median(w for w, _, _ in results[(1, "1")])
    print(
        "| hosts | batch-size | deploy (median, min–max) | added per host past the first "
        "| slowest build + health | switches, summed |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for (count, batch), rows in sorted(results.items()):
        walls = [w for w, _, _ in rows]
        median = statistics.median(walls)
        added = f"{(median - one) / (count - 1):.2f}s" if count > 1 else "—"
        build = statistics.median(b for _, b, _ in rows)
        switch = statistics.median(s for _, _, s in rows)
        print(
            f"| {count} | {batch} | {median:.2f}s ({min(walls):.2f}–{max(walls):.2f}) | {added} | {build:.2f}s "
            f"| {switch:.2f}s |"
        )


if __name__ == "__main__":
    main()
