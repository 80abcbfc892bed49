"""Issue 4 end to end: every failure leaves the host serving the previous color, under constant load
through nginx with 0 failed requests; cancellation, reruns, concurrent deploys, killed runs and a
killed sshd all end with a consistent host."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable

from lab import lab

from .conftest import SHAPES, Load
from .test_deploy import served


def running_colors(app: lab.LabApp) -> set[str]:
    return {color for color in ("blue", "green") if any(c.status == "running" for c in app.containers(color))}


def assert_serves_alone(app: lab.LabApp, color: str, version: str) -> None:
    """`color` runs `version`, nginx serves it, the other color is gone, and .active_env agrees."""
    assert served(app) == {"role": "backend", "color": color, "version": version}
    assert running_colors(app) == {color}
    assert (app.app_dir / ".active_env").read_text().strip() == color


def only_error(run: lab.ActionRun) -> str:
    (error,) = run.commands("error")
    return error


@SHAPES
def test_nginx_rejects_the_new_upstream(action_image: str, ssh_host: lab.SshHost, app: lab.LabApp) -> None:
    app.bootstrap("green")
    before = (app.app_dir / "nginx/conf.d/upstream.conf").read_text()
    sha = app.commit(
        "broken blue upstream", {"app/VERSION": "v2\n", "nginx/upstream.blue.conf": "upstream backend { server ; }\n"}
    )
    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha))
    assert run.status != 0
    assert "title=Deploy failed at Switch nginx to blue::nginx -t rejected the config" in only_error(run)
    assert (app.app_dir / "nginx/conf.d/upstream.conf").read_text() == before
    assert_serves_alone(app, "green", "v1")
    assert run.outputs["switched"] == "false" and run.outputs["rolled-back"] == "false"
    assert "put back as it was" in run.summary
    assert load.failures == [] and len(load.statuses) > 10


@SHAPES
def test_an_upstream_nginx_cannot_reach_is_refused_before_any_reload(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    """blue is healthy on its own ports, but its upstream file names a port nothing listens on."""
    app.bootstrap("green")
    live = app.server("backend_blue")
    dead = live.rsplit(":", 1)[0] + f":{lab.free_port()}"
    upstream = (app.work / "nginx/upstream.blue.conf").read_text().replace(live, dead)
    sha = app.commit(
        "blue backend upstream on a dead port", {"app/VERSION": "v2\n", "nginx/upstream.blue.conf": upstream}
    )
    workers = app.nginx_workers()
    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha))
    assert run.status != 0
    error = only_error(run)
    assert "title=Deploy failed at Switch nginx to blue::" in error
    assert f"nginx cannot connect to {dead} (nginx/upstream.blue.conf, tried in the nginx container" in error
    assert "nothing was reloaded" in error
    assert app.nginx_workers() == workers  # never reloaded
    assert run.outputs["switched"] == "false" and run.outputs["rolled-back"] == "false"
    assert_serves_alone(app, "green", "v1")
    assert "blue containers removed; green keeps serving" in run.summary
    assert load.failures == [] and len(load.statuses) > 10


@SHAPES
def test_post_switch_failure_switches_back_within_a_second(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    """nginx connects to blue's new backend upstream, but it is the db, which answers 404 on the API:
    public-url fails after the switch, and nginx is switched back within a second."""
    app.bootstrap("green")
    upstream = (app.work / "nginx/upstream.blue.conf").read_text().replace(app.server("backend_blue"), app.server("db"))
    sha = app.commit("blue backend upstream on the db", {"app/VERSION": "v2\n", "nginx/upstream.blue.conf": upstream})
    with Load(app.public_url("/"), pause=0.05) as frontend, Load(app.public_url("/api/v1/"), pause=0.01) as api:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha))
    assert run.status != 0
    error = only_error(run)
    assert "public-url" in error and "did not answer 2xx or 3xx after the switch (last: HTTP 404)" in error
    assert run.outputs["rolled-back"] == "true" and run.outputs["switched"] == "false"
    assert run.outputs["active-color"] == "green"
    assert_serves_alone(app, "green", "v1")
    exposed = re.search(
        r"switched back to green, reloaded and confirmed; the new upstream served for ([0-9.]+)s", run.summary
    )
    assert exposed, run.summary
    # The bad upstream did serve (404s on the API), briefly; the frontend never failed. The figure itself
    # (under a second) is the benchmark's to measure; this bound only tells 100 ms probing from the
    # 5 probes a second apart it replaced (4 s and more), and the clients saw no more than that figure.
    assert api.failures and set(api.failures) == {"HTTP 404"}
    assert float(exposed.group(1)) < 3.5 and api.failure_window() < min(3.5, float(exposed.group(1)) + 1)
    assert frontend.failures == [] and len(frontend.statuses) > 10


def test_build_failure_and_forged_workflow_commands(action_image: str, ssh_host: lab.SshHost, app: lab.LabApp) -> None:
    app.bootstrap("green")
    dockerfile = (
        (app.work / "app/Dockerfile").read_text()
        + "RUN echo '::error title=forged::from the host' && echo '::set-output name=switched::true' && false\n"
    )
    sha = app.commit("broken build", {"app/VERSION": "v2\n", "app/Dockerfile": dockerfile})
    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha))
    assert run.status != 0
    assert "title=Deploy failed at Build and start blue" in only_error(run)
    # The forged lines appear only between ::stop-commands::<token> and ::<token>::.
    token = ""
    for line in run.stdout.splitlines():
        if re.match(r"^::stop-commands::", line):
            token = line.rsplit("::", 1)[1]
        elif token and line == f"::{token}::":
            token = ""
        elif "forged" in line or "set-output" in line:
            assert token, f"host output outside a stop-commands block: {line}"
    assert "forged" in run.stdout
    assert_serves_alone(app, "green", "v1")
    assert run.outputs["switched"] == "false"
    assert load.failures == []


@SHAPES
def test_cancel_during_health_wait_then_rerun(action_image: str, ssh_host: lab.SshHost, app: lab.LabApp) -> None:
    app.bootstrap("green")
    broken = app.version("v2", status=503)
    with Load(app.public_url("/api/v1/")) as load:
        running = lab.RunningAction(lab.lab_inputs(ssh_host, app, broken, health_timeout="120"))
        running.wait_for_step("Health-check blue")
        running.cancel_like_the_runner()
        run = running.wait()
        assert run.status != 0
        assert "cancelled" in only_error(run)
        assert_serves_alone(app, "green", "v1")
        assert run.outputs["switched"] == "false"

        fixed = app.version("v2")
        rerun = lab.run_action(lab.lab_inputs(ssh_host, app, fixed, health_timeout="30"), {"GITHUB_RUN_ATTEMPT": "2"})
    assert rerun.status == 0, rerun.log
    assert_serves_alone(app, "blue", "v2")
    assert load.failures == []


def rerun_after_interrupting_the_drain(
    ssh_host: lab.SshHost, app: lab.LabApp, interrupt: Callable[[lab.RunningAction], None]
) -> lab.ActionRun:
    """green v1 live, load running and a long request in flight to green: deploy v2, `interrupt` the run
    during the drain (blue serves by then), then rerun it. Returns the rerun, having checked that it
    leaves blue serving alone, that the long request got its answer and that no request failed."""
    app.bootstrap("green")
    sha = app.version("v2")
    answers: list[int] = []

    def long_request() -> None:
        with lab.urllib_open(app.public_url("/slow?s=15"), timeout=60) as response:
            answers.append(response.status)

    with Load(app.public_url("/api/v1/")) as load:
        slow = threading.Thread(target=long_request)
        slow.start()
        lab.wait_for(lambda: lab.established(app.ports["GREEN_FRONTEND"]), "the long request to reach green")
        running = lab.RunningAction(lab.lab_inputs(ssh_host, app, sha, drain_timeout="60"))
        running.wait_for_step("Drain old nginx workers")
        interrupt(running)
        assert served(app)["color"] == "blue"
        rerun = lab.run_action(lab.lab_inputs(ssh_host, app, sha, drain_timeout="60"), {"GITHUB_RUN_ATTEMPT": "2"})
        slow.join(60)
    assert rerun.status == 0, rerun.log
    assert_serves_alone(app, "blue", "v2")
    assert answers == [200]
    assert load.failures == []
    return rerun


def test_cancel_during_drain_then_rerun(action_image: str, ssh_host: lab.SshHost, app: lab.LabApp) -> None:
    def cancel(running: lab.RunningAction) -> None:
        running.cancel_like_the_runner()
        run = running.wait()
        assert run.status != 0
        # The switch was made: the host says so, and so do the outputs.
        assert (app.app_dir / ".active_env").read_text().strip() == "blue"
        assert run.outputs["switched"] == "true" and run.outputs["active-color"] == "blue"

    rerun = rerun_after_interrupting_the_drain(ssh_host, app, cancel)
    assert "already live on blue" in rerun.summary


def test_a_run_killed_after_the_switch_is_finished_by_the_rerun(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    """SIGKILL of the action's container during the drain: no recovery runs, but the journal already
    says what serves, so the rerun finishes that switch instead of switching again."""

    def kill(running: lab.RunningAction) -> None:
        lab.sh("docker", "kill", running.name)
        running.process.wait(30)

    rerun = rerun_after_interrupting_the_drain(ssh_host, app, kill)
    assert "already live on blue: finished the earlier switch" in rerun.summary


def test_two_deploys_at_once(action_image: str, ssh_host: lab.SshHost, app: lab.LabApp) -> None:
    app.bootstrap("green")
    first = app.version("v2")
    second = app.version("v3")
    with Load(app.public_url("/api/v1/")) as load:
        runs = [lab.RunningAction(lab.lab_inputs(ssh_host, app, sha)) for sha in (first, second)]
        results = [r.wait() for r in runs]
    assert [r.status for r in results] == [0, 0], [r.log for r in results]
    assert any("waiting for the deploy lock" in r.stdout for r in results)
    assert len(running_colors(app)) == 1
    live = served(app)
    assert live["color"] == (app.app_dir / ".active_env").read_text().strip() == running_colors(app).pop()
    journal = [json.loads(line) for line in (app.app_dir / ".bluegreen/journal.jsonl").read_text().splitlines()]
    assert [e["result"] for e in journal] == ["adopted", "switched", "success", "switched", "success"]
    assert live["version"] == {first: "v2", second: "v3"}[journal[-1]["ref"]]
    assert load.failures == []


def test_a_killed_run_leaves_no_blocking_lock(action_image: str, ssh_host: lab.SshHost, app: lab.LabApp) -> None:
    app.bootstrap("green")
    sha = app.version("v2")
    with Load(app.public_url("/api/v1/")) as load:
        running = lab.RunningAction(lab.lab_inputs(ssh_host, app, sha))
        running.wait_for_step("Build and start blue")
        lab.sh("docker", "kill", running.name)
        running.process.wait(30)
        rerun = lab.run_action(lab.lab_inputs(ssh_host, app, sha, lock_timeout="30"), {"GITHUB_RUN_ATTEMPT": "2"})
    assert rerun.status == 0, rerun.log
    assert_serves_alone(app, "blue", "v2")
    assert load.failures == []


def test_sshd_killed_mid_build(action_image: str, ssh_host: lab.SshHost, app: lab.LabApp) -> None:
    app.bootstrap("green")
    sha = app.version("v2")
    with Load(app.public_url("/api/v1/")) as load:
        running = lab.RunningAction(lab.lab_inputs(ssh_host, app, sha))
        running.wait_for_step("Build and start blue")
        ssh_host.stop()
        try:
            run = running.wait()
        finally:
            ssh_host.restart()
        assert run.status != 0
        assert served(app)["color"] == "green"
        rerun = lab.run_action(lab.lab_inputs(ssh_host, app, sha), {"GITHUB_RUN_ATTEMPT": "2"})
    assert rerun.status == 0, rerun.log
    assert_serves_alone(app, "blue", "v2")
    assert load.failures == []
