"""Issue 23 end to end: strategy: canary under load, judged by the counts of the lab's real nginx."""

from __future__ import annotations

import json
import subprocess

import pytest
from lab import lab

from .conftest import Load
from .test_failures import assert_serves_alone, only_error

# Compose v1 with the host network (literal addresses in the upstream files) and v2 with the bridge
# network (service names, which the canary resolves as nginx does).
CANARY_SHAPES = pytest.mark.parametrize("app", [("v1", "host"), ("v2", "bridge")], indirect=True, ids=["v1", "v2"])
FAST = {"strategy": "canary", "canary_hold": "2", "canary_min_requests": "10"}


def journal(app: lab.LabApp) -> list[dict[str, object]]:
    return [json.loads(line) for line in (app.app_dir / ".bluegreen/journal.jsonl").read_text().splitlines()]


def colors(load: Load) -> set[str]:
    return {json.loads(body)["color"] for body in load.bodies}


def no_canary_left(app: lab.LabApp) -> None:
    """No split, no log and no marker left behind."""
    assert "weight=" not in (app.app_dir / "nginx/conf.d/upstream.conf").read_text()
    log = f"/tmp/bluegreen-{app.name}-canary.log"
    assert subprocess.run(["docker", "exec", app.nginx_container, "test", "-e", log]).returncode == 1
    assert not (app.app_dir / ".bluegreen/switching").exists()


@CANARY_SHAPES
def test_a_good_release_is_promoted_through_two_steps(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    app.bootstrap("green")
    sha = app.version("v2")
    with Load(app.public_url("/api/v1/"), clients=2) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha, **FAST))
    assert run.status == 0, run.log
    assert_serves_alone(app, "blue", "v2")
    assert load.failures == [] and len(load.statuses) > 50
    assert colors(load) == {"green", "blue"}
    steps = journal(app)[-1]["canary"]
    assert isinstance(steps, list) and [(s["share"], s["verdict"]) for s in steps] == [(10, "passed"), (50, "passed")]
    assert all(s["new"][0] >= 10 and s["new"][1] == 0 for s in steps), steps
    assert "**Canary of blue** (nginx's counts)" in run.summary and "| 50% |" in run.summary
    no_canary_left(app)


@CANARY_SHAPES
def test_a_partly_broken_release_is_aborted_at_the_first_step(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    """v2 fails every 5th request to one endpoint; its health URLs answer 200. The canary at 10% is
    aborted, and what failed is at most the canary's share of that endpoint's requests."""
    app.bootstrap("green")
    sha = app.commit("v2, partly broken", {"app/VERSION": "v2\n", "app/FLAKY": "/api/v1/orders 5\n"})
    with Load(app.public_url("/api/v1/")) as fine, Load(app.public_url("/api/v1/orders")) as orders:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha, strategy="canary", canary_hold="60"))
    assert run.status == 1, run.log
    error = only_error(run).replace("%25", "%")
    assert "the canary at 10% failed: the new color answered" in error and "5xx of" in error, error
    assert_serves_alone(app, "green", "v1")
    total = len(fine.statuses) + len(fine.errors) + len(orders.statuses) + len(orders.errors)
    failed = len(fine.failures) + len(orders.failures)
    assert fine.failures == []
    share_of_orders = (len(orders.statuses) + len(orders.errors)) / total
    assert 0 < failed <= 0.10 * share_of_orders * total, (failed, total)
    assert "after the verdict" in run.summary and "❌ the canary at 10% failed" in run.summary
    assert journal(app)[-1]["result"] == "failed" and journal(app)[-1]["canary"]
    no_canary_left(app)


def mid_canary(ssh_host: lab.SshHost, app: lab.LabApp, sha: str, load: Load) -> lab.RunningAction:
    """A deploy of `sha` with a long canary, once nginx has sent the canary a request of `load`."""
    running = lab.RunningAction(lab.lab_inputs(ssh_host, app, sha, strategy="canary", canary_hold="120"))
    running.wait_for_line("canary: 10% of requests")
    lab.wait_for(lambda: "blue" in colors(load), "a request served by the canary", 30)
    return running
