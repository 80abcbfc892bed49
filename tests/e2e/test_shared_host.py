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
    paused_sha, second_sha = app.version("v2"), app.version("v3")
    with Load(app.public_url("/api/v1/")) as load:
        paused = lab.RunningAction(lab.lab_inputs(ssh_host, app, paused_sha))
        paused.wait_for_step("Build and start blue")
        pid = action_pid(paused)
        os.kill(pid, signal.SIGSTOP)
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
