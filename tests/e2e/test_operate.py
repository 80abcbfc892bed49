"""Operating it: rollback to the kept previous color, pre-switch-command (migrations), keep-previous."""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import threading
from pathlib import Path

import pytest
from lab import lab

from .conftest import SHAPES, Load
from .test_deploy import assert_retired, served, started_at
from .test_failures import assert_serves_alone, only_error


def head(app: lab.LabApp) -> str:
    return lab.as_deploy("git", "-C", app.app_dir, "rev-parse", "HEAD").strip()


def journal(app: lab.LabApp) -> list[dict[str, object]]:
    """The journal's whole lines (a test may have torn some)."""
    path = app.app_dir / ".bluegreen/journal.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    entries = []
    for line in lines:
        with contextlib.suppress(ValueError):
            entries.append(json.loads(line))
    return entries


def host_state(app: lab.LabApp) -> tuple[object, ...]:
    """What a refused run must leave as it was: containers and their start times, the upstream,
    .active_env, the checkout and the journal."""
    containers = sorted((c.name, c.status, started_at(c)) for s in ("base", "blue", "green") for c in app.containers(s))
    files = [(app.app_dir / rel).read_text() for rel in ("nginx/conf.d/upstream.conf", ".active_env")]
    return containers, files, head(app), journal(app)


def tear_the_journal(app: lab.LabApp) -> None:
    """What a connection lost mid-append left, as an earlier release wrote it: each of the last two
    deploys' `switched` line cut short, and its `success` line glued onto the torn one."""
    path = app.app_dir / ".bluegreen/journal.jsonl"
    lines = path.read_text().splitlines()
    assert [json.loads(line)["result"] for line in lines[-4:]] == ["switched", "success"] * 2
    path.write_text("\n".join([*lines[:-4], lines[-4][:40] + lines[-3], lines[-2][:25] + lines[-1]]) + "\n")


@pytest.mark.parametrize(
    ("app", "keep"),
    [(("v2", "bridge"), "stopped"), (("v1", "host"), "running"), (("v1", "bridge", "folders"), "stopped")],
    indirect=["app"],
    ids=["v2-bridge-stopped", "v1-host-running", "v1-bridge-folders-stopped"],
)
def test_deploy_then_rollback_and_forward_again(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp, keep: str
) -> None:
    app.bootstrap("green")
    sha2, sha3 = app.version("v2"), ""
    for sha in (sha2, sha3 := app.version("v3")):
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha, keep_previous=keep))
        assert run.status == 0, run.log
    tear_the_journal(app)  # a rollback reads every whole record, the glued ones too
    assert served(app) == {"role": "backend", "color": "green", "version": "v3"}
    assert_retired(app, "blue", keep)
    blue_ids = {c.id for c in app.containers("blue")}

    rollback = lab.lab_inputs(ssh_host, app, "", command="rollback", keep_previous=keep)
    job = {"GITHUB_RUN_ID": f"{app.name}-rollback"}
    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(rollback, job)
    assert run.status == 0, run.log
    assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}
    assert {c.id for c in app.containers("blue")} == blue_ids  # the kept containers, not a rebuild
    assert run.outputs == lab.with_hosts_json(
        ssh_host,
        {
            "active-color": "blue",
            "previous-color": "green",
            "deployed-ref": sha2,
            "switched": "true",
            "rolled-back": "false",
        },
    )
    assert f"Rolled back to `{sha2[:12]}`: green → blue" in run.summary
    assert ("started 2 kept containers" if keep == "stopped" else "already running") in run.summary
    assert "Build" not in run.summary
    assert head(app) == sha2 and (app.app_dir / ".active_env").read_text().strip() == "blue"
    assert journal(app)[-1]["command"] == "rollback" and journal(app)[-1]["ref"] == sha2
    assert_retired(app, "green", keep)
    assert load.failures == [] and len(load.statuses) > 10
    assert {json.loads(b)["color"] for b in load.bodies} == {"green", "blue"}

    # Rerunning that job does not roll back again.
    rerun = lab.run_action(rollback, {**job, "GITHUB_RUN_ATTEMPT": "2"})
    assert rerun.status == 0, rerun.log
    assert f"`{sha2[:12]}` is already live on blue" in rerun.summary
    assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}

    # A second rollback goes forward again, to green at v3.
    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(rollback)
    assert run.status == 0, run.log
    assert served(app) == {"role": "backend", "color": "green", "version": "v3"}
    assert run.outputs["deployed-ref"] == sha3 and head(app) == sha3
    assert load.failures == [] and len(load.statuses) > 10


def test_rollback_is_refused_when_there_is_nothing_to_roll_back_to(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    app.bootstrap("green")  # set up by hand: the journal knows of no deploy
    rollback = lab.lab_inputs(ssh_host, app, "", command="rollback")

    def refused(message: str) -> lab.ActionRun:
        before = host_state(app)
        with Load(app.public_url("/api/v1/")) as load:
            run = lab.run_action(rollback)
        assert run.status != 0
        assert message in only_error(run)
        assert host_state(app) == before
        assert load.failures == [] and len(load.statuses) > 10
        return run

    run = refused("the journal has no deploy that switched to blue")
    assert "Rollback refused: green keeps serving" in run.summary

    # blue served v2, then green v3; blue was kept, but then recreated by hand: not what served v2.
    for sha in (app.version("v2"), app.version("v3")):
        assert lab.run_action(lab.lab_inputs(ssh_host, app, sha)).status == 0
    app.compose("blue", "up", "-d", "--force-recreate")
    app.compose("blue", "stop")
    refused("blue's containers are not the ones that served")

    # v4 went to blue with keep-previous: none, which removed green.
    sha4 = app.version("v4")
    assert lab.run_action(lab.lab_inputs(ssh_host, app, sha4, keep_previous="none")).status == 0
    assert app.containers("green") == []
    refused(f"the deploy of {sha4[:12]} removed them (keep-previous: none)")
    assert served(app)["version"] == "v4"


def test_a_failed_rollback_restores_like_a_failed_deploy(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    app.bootstrap("green")
    for sha in (app.version("v2"), sha3 := app.version("v3")):
        assert lab.run_action(lab.lab_inputs(ssh_host, app, sha)).status == 0
    blue_ids = {c.id for c in app.containers("blue")}
    closed = lab.free_port()
    rollback = lab.lab_inputs(
        ssh_host, app, "", command="rollback", blue_health_urls=f"http://127.0.0.1:{closed}/", health_timeout="3"
    )
    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(rollback)
    assert run.status != 0
    assert f"http://127.0.0.1:{closed}/ did not answer 2xx" in only_error(run)
    assert "blue's kept containers stopped again" in run.summary
    assert f"checkout back at {sha3[:12]}" in run.summary
    assert app.kept_stopped("blue") and {c.id for c in app.containers("blue")} == blue_ids
    assert head(app) == sha3
    assert served(app) == {"role": "backend", "color": "green", "version": "v3"}
    assert run.outputs["switched"] == "false" and run.outputs["active-color"] == "green"
    assert load.failures == [] and {json.loads(b)["color"] for b in load.bodies} == {"green"}


def test_the_runners_cancel_sequence_never_cuts_a_recovery_that_outlasts_its_first_signal(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    """A rollback cancelled in its health gate, with a 9 s request in flight to blue's backend: the
    recovery stops the kept containers it started with their grace (10 s), so it is still running
    when the runner's SIGTERM comes 7.5 s after its SIGINT. It goes on to its end: the summary and
    outputs say what was restored, the request got its answer, and a rerun finds a consistent host."""
    app.bootstrap("green")
    for sha in (app.version("v2"), sha3 := app.version("v3")):
        assert lab.run_action(lab.lab_inputs(ssh_host, app, sha)).status == 0
    blue_ids = {c.id for c in app.containers("blue")}
    backend = f"http://127.0.0.1:{app.ports['BLUE_BACKEND']}"
    waiting = f"{backend}/api/v1/\nhttp://127.0.0.1:{lab.free_port()}/"  # never healthy: the gate waits
    rollback = lab.lab_inputs(ssh_host, app, "", command="rollback", health_timeout="120")
    answers: list[int] = []

    def long_request() -> None:
        with lab.urllib_open(f"{backend}/slow?s=9", timeout=60) as response:
            answers.append(response.status)

    with Load(app.public_url("/api/v1/")) as load:
        running = lab.RunningAction({**rollback, "blue-health-urls": waiting})
        running.wait_for_step("Health-check blue")
        lab.wait_port(app.ports["BLUE_BACKEND"])  # blue was just started again
        slow = threading.Thread(target=long_request)
        slow.start()
        lab.wait_for(lambda: lab.established(app.ports["BLUE_BACKEND"]), "the long request to reach blue")
        running.cancel_like_the_runner()
        run = running.wait()
        slow.join(60)
        assert run.status != 0
        assert "the run was cancelled (SIGINT/SIGTERM)" in run.summary
        assert "SIGTERM came while the action was leaving the host consistent; it finished that first" in run.summary
        assert "blue's kept containers stopped again" in run.summary and f"checkout back at {sha3[:12]}" in run.summary
        assert run.outputs["switched"] == "false" and run.outputs["active-color"] == "green"
        assert answers == [200]
        assert app.kept_stopped("blue") and {c.id for c in app.containers("blue")} == blue_ids
        assert head(app) == sha3 and served(app) == {"role": "backend", "color": "green", "version": "v3"}

        rerun = lab.run_action(rollback)
    assert rerun.status == 0, rerun.log
    assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}
    assert load.failures == [] and len(load.statuses) > 10


@SHAPES
def test_pre_switch_command_runs_in_the_new_color_before_any_request_reaches_it(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    app.bootstrap("green")
    sha = app.version("v2")
    command = "backend_{color} sh -c 'echo migrating {color}; touch /tmp/migrated'"
    with Load(app.public_url("/api/v1/"), pause=0.005) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha, pre_switch_command=command))
    assert run.status == 0, run.log
    bodies = [json.loads(b) for b in load.bodies]
    blue = [b for b in bodies if b["color"] == "blue"]
    # Ordering, not timing: every answer blue gave through nginx came after the command had run in it.
    assert blue and all(b.get("migrated") is True for b in blue)
    assert not any(b.get("migrated") for b in bodies if b["color"] == "green")
    assert load.failures == []
    assert "**pre-switch-command** `backend_blue sh -c 'echo migrating blue; touch /tmp/migrated'` in blue: exit 0" in (
        run.summary
    )
    assert "migrating blue" in run.summary
    shown = run.stdout.splitlines()
    stop = next(i for i, line in enumerate(shown) if line.startswith("::stop-commands::"))
    assert shown[stop + 1] == "migrating blue"


def test_a_failing_or_slow_pre_switch_command_restores_like_a_failed_health_check(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    app.bootstrap("green")
    sha = app.version("v2")
    upstream = (app.app_dir / "nginx/conf.d/upstream.conf").read_text()
    failing = "backend_{color} sh -c 'echo applying 0002; echo relation already exists >&2; exit 3'"
    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha, pre_switch_command=failing))
        assert run.status != 0
        assert "pre-switch-command exited with status 3 in backend_blue" in only_error(run)
        assert "relation already exists" in run.summary and "applying 0002" in run.summary
        assert run.outputs["switched"] == "false" and run.outputs["active-color"] == "green"
        assert app.containers("blue") == []

        slow = lab.lab_inputs(ssh_host, app, sha, pre_switch_command="backend_{color} sleep 60", pre_switch_timeout="2")
        run = lab.run_action(slow)
        assert run.status != 0
        assert "pre-switch-command ran past pre-switch-timeout (2s) in backend_blue" in only_error(run)
        assert app.containers("blue") == []
    assert (app.app_dir / "nginx/conf.d/upstream.conf").read_text() == upstream
    assert served(app) == {"role": "backend", "color": "green", "version": "v1"}
    assert load.failures == [] and {json.loads(b)["color"] for b in load.bodies} == {"green"}


def test_a_hostile_pre_switch_command_runs_nothing_on_the_host(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    app.bootstrap("green")
    sha = app.version("v2")
    # in /tmp, where the deploy user could write, if anything ran a shell on the host
    marks = [Path(f"/tmp/bluegreen-hostile-{app.name}-{i}") for i in range(4)]
    hostile = f"backend_{{color}} $(touch {marks[0]}) ; touch {marks[1]} && `touch {marks[2]}` | touch {marks[3]}"
    with Load(app.public_url("/api/v1/")) as load:
        # A service the compose file does not have: refused before anything changes.
        before = head(app)
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha, pre_switch_command="backend_bleu migrate"))
        assert run.status != 0
        assert "'backend_bleu' is not a service of docker-compose.blue.yml" in only_error(run)
        assert head(app) == before and app.containers("blue") == []

        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha, pre_switch_command=hostile))
    assert run.status != 0
    assert "pre-switch-command exited with status" in only_error(run)
    assert [m for m in marks if m.exists()] == []
    assert served(app)["color"] == "green" and app.containers("blue") == []
    assert load.failures == []


def test_host_nginx_with_a_root_master_through_sudo(action_image: str, ssh_host: lab.SshHost, app: lab.LabApp) -> None:
    """nginx from the distribution's package, master owned by root; the deploy user may run only
    `sudo -n nginx -t|-T|-s reload` (the sudoers line of docs/host-layout.md)."""
    assert lab.SUDOERS_LINE in (lab.REPO_ROOT / "docs/host-layout.md").read_text()
    app.host_nginx_layout()
    app.write_live("green")
    nginx = lab.HostNginx(app)
    try:
        nginx.start()
        app.bootstrap("green")
        master = nginx.master()
        assert nginx.master_uid() == 0
        # The deploy user can neither signal the master nor run other nginx commands through sudo.
        for argv in (["kill", "-0", str(master)], ["sudo", "-n", "nginx", "-s", "stop"]):
            denied = subprocess.run(["runuser", "-u", lab.DEPLOY_USER, "--", *argv], capture_output=True, text=True)
            assert denied.returncode != 0, argv
        inputs = {"nginx_container": "", "nginx_sudo": "true"}
        workers = nginx.workers()

        with Load(app.public_url("/api/v1/")) as load:
            run = lab.run_action(lab.lab_inputs(ssh_host, app, app.version("v2"), **inputs))
        assert run.status == 0, run.log
        assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}
        assert nginx.master() == master and not workers & nginx.workers()
        assert f"{len(workers)} old workers gone" in run.summary
        assert load.failures == [] and {json.loads(b)["color"] for b in load.bodies} == {"green", "blue"}

        # A config nginx -t rejects: nothing reloaded, the upstream file put back.
        upstream = (app.app_dir / "nginx/conf.d/upstream.conf").read_text()
        good = (app.work / "nginx/upstream.green.conf").read_text()
        broken = good.replace("server ", "server ;", 1)
        sha = app.commit("a broken green upstream", {"app/VERSION": "v3\n", "nginx/upstream.green.conf": broken})
        workers = nginx.workers()
        with Load(app.public_url("/api/v1/")) as load:
            run = lab.run_action(lab.lab_inputs(ssh_host, app, sha, **inputs))
        assert run.status != 0
        assert "nginx -t rejected the config" in only_error(run)
        assert (app.app_dir / "nginx/conf.d/upstream.conf").read_text() == upstream
        assert nginx.workers() == workers
        assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}
        assert load.failures == [] and len(load.statuses) > 10

        # A canary: root's master opens its log in the app's .bluegreen; the deploy user reads and removes it.
        fixed = app.commit("v4", {"app/VERSION": "v4\n", "nginx/upstream.green.conf": good})
        canary = {"strategy": "canary", "canary_steps": "20", "canary_hold": "2", "canary_min_requests": "10"}
        with Load(app.public_url("/api/v1/"), clients=2) as load:
            run = lab.run_action(lab.lab_inputs(ssh_host, app, fixed, **inputs, **canary))
        assert run.status == 0, run.log
        assert served(app) == {"role": "backend", "color": "green", "version": "v4"}
        assert load.failures == [] and "| 20% |" in run.summary and "✅ passed" in run.summary, run.summary
        assert not (app.app_dir / ".bluegreen/canary.log").exists()
    finally:
        nginx.stop()


@pytest.mark.parametrize(
    "step", ["Build and start green", "Switch nginx to green", "Drain old nginx workers", "Stop blue"]
)
def test_a_sigkill_at_any_point_leaves_a_journal_the_rerun_and_a_rollback_can_trust(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp, step: str
) -> None:
    """blue v2 live (deployed by the action), green v1 kept: deploy v3, SIGKILL the action's container
    when it opens `step`, rerun. Long requests hold the drain (through nginx) and the stop of blue
    (straight to its backend), so every step lasts long enough to be killed in."""
    app.bootstrap("green")
    sha2 = app.version("v2")
    assert lab.run_action(lab.lab_inputs(ssh_host, app, sha2)).status == 0
    sha3 = app.version("v3")
    inputs = lab.lab_inputs(ssh_host, app, sha3, drain_timeout="60")
    answers: list[int] = []

    def long_request(url: str) -> None:
        with lab.urllib_open(url, timeout=60) as response:
            answers.append(response.status)

    with Load(app.public_url("/api/v1/")) as load:
        slow = [
            threading.Thread(target=long_request, args=(url,))
            for url in (app.public_url("/slow?s=12"), f"http://127.0.0.1:{app.ports['BLUE_BACKEND']}/slow?s=16")
        ]
        for thread in slow:
            thread.start()
        for port in (app.ports["BLUE_FRONTEND"], app.ports["BLUE_BACKEND"]):
            lab.wait_for(functools.partial(lab.established, port), f"a long request to reach port {port}")
        running = lab.RunningAction(inputs)
        running.wait_for_step(step)
        lab.sh("docker", "kill", running.name)
        running.process.wait(30)
        tail = running.output().split("::group::")[-1]
        assert tail.startswith(step) and "::endgroup::" not in tail, running.output()  # killed in it
        rerun = lab.run_action(inputs, {"GITHUB_RUN_ATTEMPT": "2"})
        for thread in slow:
            thread.join(60)
        assert rerun.status == 0, rerun.log
        assert_serves_alone(app, "green", "v3")
        assert app.kept_stopped("blue")
        last = journal(app)[-1]
        assert (last["result"], last["to"], last["ref"]) == ("success", "green", sha3)

        rollback = lab.run_action(lab.lab_inputs(ssh_host, app, "", command="rollback"))
        assert rollback.status == 0, rollback.log
        assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}
    assert answers == [200, 200]
    assert load.failures == []
