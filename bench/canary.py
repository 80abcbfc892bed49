"""Benchmark: a partly broken release (every 5th request to one endpoint answers 500, its health URLs
200) deployed with strategy: switch, with public-url, and with strategy: canary.

    .venv/bin/python -m bench.canary --rounds 3

Each round is a fresh app (Compose v2, the bridge network), green v1 live, then the deploy of the
broken v2 under the same traffic mix (bench/load.py): 50 requests/s to /api/v1/ and 50 to the broken
/api/v1/orders. The load runs from the deploy's start until --after seconds after it ends, which
stands for the time until someone notices and rolls back by hand (the canary needs no one). With
public-url, it is the broken endpoint itself (the most a team could ask of it). Prints a Markdown
table: the share of all requests that failed, median and spread over the rounds, and the deploy's
verdict and time."""

from __future__ import annotations

import argparse
import re
import statistics
import time

from lab import lab

from bench.load import Load

MODES = {
    "switch": {},
    "switch + public-url": {"public_url": "ORDERS"},
    "canary (10,50; 60 s)": {"strategy": "canary"},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--after", type=float, default=30.0)
    args = parser.parse_args()
    lab.build_action_image()
    host = lab.start_sshd()
    lab.use_compose("v2")
    results: dict[str, list[tuple[float, int, float, int]]] = {mode: [] for mode in MODES}
    back: dict[str, list[float]] = {mode: [] for mode in MODES}  # seconds from the verdict to the old color
    try:
        for _ in range(args.rounds):
            for mode, extra in MODES.items():
                app = lab.make_app(variant="bridge")
                try:
                    app.bootstrap("green")
                    sha = app.commit("v2, partly broken", {"app/VERSION": "v2\n", "app/FLAKY": "/api/v1/orders 5\n"})
                    overrides = {k: app.public_url("/api/v1/orders") if v == "ORDERS" else v for k, v in extra.items()}
                    port = int(app.public_url("/").split(":")[2].split("/")[0])
                    with Load(port, 50, 2, 0) as fine, Load(port, 50, 2, 0, path="/api/v1/orders") as orders:
                        started = time.monotonic()
                        run = lab.run_action(lab.lab_inputs(host, app, sha, **overrides))
                        took = time.monotonic() - started
                        time.sleep(args.after)  # the traffic a release gets until someone acts
                    total = sum(c.ok + c.failed for c in (fine.counts, orders.counts))
                    failed = fine.counts.failed + orders.counts.failed
                    results[mode].append((100 * failed / total, run.status, took, total))
                    if found := re.search(r"went back to green (\d+\.\d+)s after the verdict", run.summary):
                        back[mode].append(float(found.group(1)))
                finally:
                    app.teardown()
    finally:
        host.stop()
    print("| deploy of the partly broken release | requests (median) | failed, % of all (median; each round) "
          "| deploy result | deploy time (median) | verdict to old color (each round) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for mode, rows in results.items():
        shares = ", ".join(f"{share:.2f}" for share, _, _, _ in rows)
        verdicts = {("failed, switched back" if status else "succeeded") for _, status, _, _ in rows}
        print(
            f"| {mode} | {statistics.median(r[3] for r in rows):.0f} | "
            f"{statistics.median(r[0] for r in rows):.2f} ({shares}) | {', '.join(sorted(verdicts))} | "
            f"{statistics.median(r[2] for r in rows):.0f} s | "
            f"{', '.join(f'{b:.2f} s' for b in back[mode]) or '—'} |"
        )


if __name__ == "__main__":
    main()
