"""Issue 23 end to end, the canary's control: too little traffic, a cancel and a kill mid-step, and
a held canary promoted or aborted; under load, on the lab's real nginx."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from lab import lab

from .conftest import Load
from .test_canary import FAST, journal, mid_canary, no_canary_left
from .test_deploy import served
from .test_failures import assert_serves_alone, only_error


@pytest.mark.parametrize("app", [("v2", "bridge")], indirect=True, ids=["v2"])
def test_an_inconclusive_step_under_low_traffic_is_held_once_more_then_aborted(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    app.bootstrap("green")
    sha = app.version("v2")
    with Load(app.public_url("/api/v1/"), pause=0.5) as load:
        run = lab.run_action(
            lab.lab_inputs(ssh_host, app, sha, strategy="canary", canary_hold="2", canary_min_requests="200")
        )
    assert run.status == 1, run.log
    error = only_error(run).replace("%25", "%")
    assert "the canary at 10% was inconclusive" in error and "fewer than canary-min-requests (200)" in error
    assert "the step is held once more" in run.log
    assert_serves_alone(app, "green", "v1")
    assert load.failures == []
    no_canary_left(app)


def test_a_cancel_mid_canary_is_an_abort_and_a_kill_is_settled_by_the_rerun(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    app.bootstrap("green")
    sha = app.version("v2")
    with Load(app.public_url("/api/v1/"), clients=2) as load:
        running = mid_canary(ssh_host, app, sha, load)
        running.cancel_like_the_runner()
        run = running.wait()
    assert run.status != 0
    assert "cancelled" in only_error(run)
    assert_serves_alone(app, "green", "v1")
    assert load.failures == []
    no_canary_left(app)

    with Load(app.public_url("/api/v1/"), clients=2) as load:
        running = mid_canary(ssh_host, app, sha, load)
        subprocess.run(["docker", "kill", running.name], check=True, capture_output=True)
        running.process.wait(30)
        shutil.rmtree(running.workdir, ignore_errors=True)
        assert "weight=" in (app.app_dir / "nginx/conf.d/upstream.conf").read_text()  # the split it left
        rerun = lab.run_action(lab.lab_inputs(ssh_host, app, sha, **FAST), {"GITHUB_RUN_ATTEMPT": "2"})
    assert rerun.status == 0, rerun.log
    assert any("died during its canary at 10%" in w for w in rerun.commands("warning")), rerun.log
    assert_serves_alone(app, "blue", "v2")
    assert load.failures == []
    no_canary_left(app)


@pytest.mark.parametrize("app", [("v2", "host")], indirect=True, ids=["v2"])
def test_a_held_canary_is_promoted_and_another_aborted(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    app.bootstrap("green")
    held = {**FAST, "canary_steps": "20,hold"}
    with Load(app.public_url("/api/v1/"), clients=2) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, app.version("v2"), **held))
        assert run.status == 0, run.log
        assert "held at 20%" in run.summary and run.outputs["active-color"] == "green"
        split = len(load.bodies)
        lab.wait_for(lambda: len(load.bodies) > split + 40, "requests through the held split", 30)
        assert {json.loads(b)["color"] for b in load.bodies[split:]} == {"green", "blue"}

        refused = lab.run_action(lab.lab_inputs(ssh_host, app, app.version("v3"), **FAST))
        assert refused.status == 1 and "command: promote or command: abort" in only_error(refused)

        promoted = lab.run_action(lab.lab_inputs(ssh_host, app, "", command="promote"))
        assert promoted.status == 0, promoted.log
        assert_serves_alone(app, "blue", "v2")

        run = lab.run_action(lab.lab_inputs(ssh_host, app, app.version("v4"), **held))
        assert run.status == 0, run.log
        aborted = lab.run_action(lab.lab_inputs(ssh_host, app, "", command="abort"))
        assert aborted.status == 0, aborted.log
    assert_serves_alone(app, "blue", "v2")
    assert served(app)["version"] == "v2"
    assert load.failures == []
    results = [e["result"] for e in journal(app) if e["result"] != "switched"]
    assert results[-4:] == ["held", "success", "held", "aborted"]
    assert not (app.app_dir / ".bluegreen/canary-held").exists()
    no_canary_left(app)
