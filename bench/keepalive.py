"""Benchmark: a rolling deploy of 3 separate hosts (lab/hosts.py) behind a load balancer that keeps
connections to them open and retries nothing (lab/lb.py), with and without lb-detach-command and
lb-attach-command.

    .venv/bin/python -m bench.keepalive --rounds 2 --latency-ms 20

Each round is a fresh app, green live on every host, then a deploy of a new version under a steady
load through the load balancer (bench/load.py: 4 keep-alive clients, 100 requests/s). The load
balancer reaches each host --latency-ms away, each way: a host's reload closes its idle keep-alive
connections, and a request the load balancer sends on one before it sees the close fails. Prints a
Markdown table of requests and failed requests per deploy."""

from __future__ import annotations

import argparse
import statistics

from lab import hosts, lab

from bench.load import Load


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latency-ms", type=int, default=20)
    args = parser.parse_args()
    made, key = hosts.start_bench_hosts()
    results: dict[bool, list[tuple[int, int]]] = {False: [], True: []}
    try:
        for _ in range(args.rounds):
            for hooks in (False, True):
                app = hosts.fresh_fleet_app(made)
                balancer = hosts.start_keepalive_load_balancer(made, args.latency_ms)
                try:
                    extra = (
                        {"lb_detach_command": hosts.LB_DETACH, "lb_attach_command": hosts.LB_ATTACH} if hooks else {}
                    )
                    inputs = hosts.fleet_inputs(made, app, app.version("v2"), key, **extra)
                    with Load(balancer.port, long_in_flight=0) as load:
                        run = lab.run_action(inputs, timeout=900)
                    if run.status != 0:
                        raise SystemExit(f"deploy failed (hooks: {hooks}):\n{run.log}")
                    results[hooks].append((load.counts.ok + load.counts.failed, load.counts.failed))
                finally:
                    balancer.stop()
                    app.teardown()
    finally:
        for host in made:
            host.stop()
    print("| lb hooks | latency to hosts | requests per deploy (median) | failed per deploy (each round) |")
    print("| --- | --- | --- | --- |")
    for hooks, rows in results.items():
        total = statistics.median(r for r, _ in rows)
        failed = ", ".join(str(f) for _, f in rows)
        print(f"| {'yes' if hooks else 'no'} | {args.latency_ms} ms | {total:.0f} | {failed} |")


if __name__ == "__main__":
    main()
