"""Issue 20 end to end: a host that is shared, with a runner that pauses. The guarantees hold outside
the states a single tidy deploy sets up: a run whose lock lapsed changes nothing more."""

from __future__ import annotations

import json
import os
import signal

from lab import lab

from .conftest import Load
from .test_deploy import served
from .test_failures import assert_serves_alone


def action_pid(running: lab.RunningAction) -> int:
    """The action's process as the host's kernel sees it (PID 1 of its container)."""
    lab.wait_for(running.container_exists, "the action's container to start", 60)
    return int(lab.sh("docker", "inspect", "--format", "{{.State.Pid}}", running.name).strip())


def test_a_runner_paused_past_the_lapse_changes_nothing_once_it_wakes(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    """The runner is stopped (SIGSTOP: a paused VM, a sleeping laptop) mid-build for longer than the
    lock's silence. Its holder lets go once the build it started has ended; a second deploy takes the
    lock and ships v3. When the first wakes, it sends nothing more: no build over the second's live
    color, no old upstream written back. A plain nginx reload afterwards still serves v3."""
    app.bootstrap("green")
    dockerfile = (app.work / "app/Dockerfile").read_text()
    # v2's build lasts 10 s: the pause surely lands in it, whatever the machine's load
    paused_sha = app.commit(
        "v2, slow to build", {"app/VERSION": "v2\n", "app/Dockerfile": dockerfile + "RUN sleep 10\n"}
    )
    second_sha = app.commit("v3", {"app/VERSION": "v3\n", "app/Dockerfile": dockerfile})
    with Load(app.public_url("/api/v1/")) as load:
        paused = lab.RunningAction(lab.lab_inputs(ssh_host, app, paused_sha))
        paused.wait_for_step("Build and start blue")
        pid = action_pid(paused)
        os.kill(pid, signal.SIGSTOP)
        tail = paused.output().split("::group::")[-1]
        assert tail.startswith("Build and start blue") and "::endgroup::" not in tail, paused.output()
        try:
            second = lab.run_action(
                lab.lab_inputs(ssh_host, app, second_sha, lock_timeout="300"), {"GITHUB_RUN_ATTEMPT": "2"}
            )
        finally:
            os.kill(pid, signal.SIGCONT)
        first = paused.wait()
        app.nginx("-s", "reload")  # what a certificate renewal or a restart does later
        lab.wait_for(lambda: len(app.nginx_workers()) > 0, "nginx workers after the reload")
        assert_serves_alone(app, "blue", "v3")
    assert second.status == 0, second.log
    assert "waiting for the deploy lock" in second.stdout
    assert first.status != 0
    (error,) = first.commands("error")
    assert "lost the deploy lock on" in error and "the runner was silent for" in error, error
    assert "nothing more was changed" in error
    assert "this run no longer holds the deploy lock" in first.summary
    journal = [json.loads(line) for line in (app.app_dir / ".bluegreen/journal.jsonl").read_text().splitlines()]
    assert journal[-1]["result"] == "success" and journal[-1]["ref"] == second_sha
    assert not [e for e in journal if e.get("ref") == paused_sha and e["result"] != "adopted"]
    assert load.failures == []


def test_hand_edits_on_the_host_survive_a_deploy(action_image: str, ssh_host: lab.SshHost, app: lab.LabApp) -> None:
    """A hotfix in a tracked file and a file added to the index but never committed: the deploy is
    refused by name and both stay as they were; with host-changes: stash they are kept in a stash."""
    app.bootstrap("green")
    sha = app.version("v2")
    nginx_conf = app.app_dir / "nginx/nginx.conf"
    hotfix = nginx_conf.read_text() + "# hotfix made on the host\n"
    lab.as_deploy("sh", "-c", 'printf "%s" "$1" > nginx/nginx.conf', "sh", hotfix, cwd=app.app_dir)
    lab.as_deploy("sh", "-c", "echo staged > notes.txt && git add notes.txt", cwd=app.app_dir)
    status = lab.as_deploy("git", "status", "--porcelain", cwd=app.app_dir)
    with Load(app.public_url("/api/v1/")) as load:
        refused = lab.run_action(lab.lab_inputs(ssh_host, app, sha))
        assert served(app)["color"] == "green"
        assert lab.as_deploy("git", "status", "--porcelain", cwd=app.app_dir) == status
        assert nginx_conf.read_text() == hotfix and (app.app_dir / "notes.txt").read_text() == "staged\n"
        stashed = lab.run_action(lab.lab_inputs(ssh_host, app, sha, host_changes="stash"), {"GITHUB_RUN_ATTEMPT": "2"})
    assert refused.status != 0
    (error,) = refused.commands("error")
    assert "would discard changes made on the host" in error and "notes.txt" in error and "nginx/nginx.conf" in error
    assert stashed.status == 0, stashed.log
    assert_serves_alone(app, "blue", "v2")
    stashes = lab.as_deploy("git", "stash", "list", cwd=app.app_dir)
    assert "bluegreen: host changes before" in stashes, stashes
    assert "stashed the host's changes to" in stashed.summary
    shown = lab.as_deploy("git", "stash", "show", "--name-only", "stash@{0}", cwd=app.app_dir).split()
    assert sorted(shown) == ["nginx/nginx.conf", "notes.txt"]
    assert load.failures == []


def containers_state(app: lab.LabApp) -> list[tuple[str, str, str]]:
    """Each of the app's containers: id, status and start time (a recreate or restart changes them)."""
    return sorted((c.id, c.status, c.attrs["State"]["StartedAt"]) for c in app.all_containers())


def test_another_app_with_the_same_project_name_is_refused_and_never_touched(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    """Prod serves green; staging lives in another folder but runs under prod's project name (as
    /srv/staging/app and /srv/prod/app both get `app`). Staging's deploy is refused before anything
    changes, naming prod's containers and the fix; prod is never recreated, and never answers 502."""
    app.bootstrap("green")
    staging = lab.make_app()
    try:
        sha = staging.version("v2")
        before = containers_state(app)
        with Load(app.public_url("/api/v1/")) as load:
            refused = lab.run_action(lab.lab_inputs(ssh_host, staging, sha, project_name=app.name))
        assert refused.status != 0
        (error,) = refused.commands("error")
        assert f"compose project {app.name} also holds containers of another app" in error, error
        assert str(app.app_dir) in error and f"{app.name}-nginx" in error and "project-name" in error
        assert containers_state(app) == before
        assert staging.all_containers() == [] and not (staging.app_dir / ".bluegreen/journal.jsonl").exists()
        assert load.failures == []
        assert served(app)["color"] == "green"
    finally:
        staging.teardown()


def test_a_one_off_container_on_the_idle_color_is_left_running_and_never_recorded(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    """`compose run -d backend_blue …` (a backfill) on the idle color: the deploy to blue builds and
    starts blue's services beside it, never stops or removes it, and never journals it as blue's."""
    app.bootstrap("green")
    app.compose("blue", "build")
    app.compose("blue", "run", "-d", "--no-deps", "backend_blue", "python3", "-c", "import time; time.sleep(600)")
    (one_off,) = [c for c in app.all_containers() if c.labels.get("com.docker.compose.oneoff") == "True"]
    run = lab.run_action(lab.lab_inputs(ssh_host, app, app.version("v2")))
    assert run.status == 0, run.log
    one_off.reload()
    assert one_off.status == "running"
    journal = [json.loads(line) for line in (app.app_dir / ".bluegreen/journal.jsonl").read_text().splitlines()]
    assert journal[-1]["result"] == "success" and journal[-1]["to"] == "blue"
    assert one_off.id not in journal[-1]["containers"] and len(journal[-1]["containers"]) == 2
    one_off.remove(force=True)
    assert_serves_alone(app, "blue", "v2")
