"""plan: true runs the read-only steps of a deploy and says what it would do; the host, every file
of app-dir (its .git too), every container and nginx stay exactly as they were."""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest
from lab import lab

pytestmark = pytest.mark.e2e


def snapshot(app: lab.LabApp) -> tuple[object, ...]:
    """Every path under app-dir with its size, mode and modification time, and every container
    with its state and start time: what a plan must leave untouched."""
    files = []
    for root, dirs, names in os.walk(app.app_dir):
        for name in sorted(dirs + names):
            path = Path(root) / name
            stat = path.lstat()
            files.append((str(path), stat.st_size, stat.st_mode, stat.st_mtime_ns))
    mine = {"label": f"com.docker.compose.project={app.name}"}  # other tests' containers may come and go
    containers = sorted(
        (c.id, c.status, c.attrs["State"]["StartedAt"])
        for c in docker.from_env().containers.list(ignore_removed=True, all=True, filters=mine)
    )
    return sorted(files), containers, (app.app_dir / "nginx/conf.d/upstream.conf").read_text()


def changed(before: tuple[object, ...], after: tuple[object, ...]) -> list[object]:
    """What differs between two snapshots, for the assertion's message."""
    return [
        sorted(set(a) ^ set(b)) if isinstance(a, list) and isinstance(b, list) else (a, b)
        for a, b in zip(before, after, strict=True)
        if a != b
    ]


def test_a_plan_says_what_a_deploy_would_do_and_changes_nothing(ssh_host: lab.SshHost, app: lab.LabApp) -> None:
    app.bootstrap("green")
    sha = app.version("v2")  # pushed to origin, not yet fetched by the host's clone
    before = snapshot(app)
    run = lab.run_action(lab.lab_inputs(ssh_host, app, sha, plan="true"))
    assert run.status == 0, run.log
    assert "Plan for deploy@127.0.0.1" in run.summary and "nothing was changed" in run.summary
    assert "live: nginx serves green; a deploy builds blue and switches to it" in run.summary
    assert f"ref {sha}: commit at {sha[:12]} (not fetched yet" in run.summary
    assert "build: " in run.summary and "backend_blue" in run.summary
    assert "Verdict:** a deploy would switch green → blue" in run.summary
    assert snapshot(app) == before, changed(before, snapshot(app))

    (app.app_dir / "app/VERSION").write_text("hotfix\n")  # a hand edit to a tracked file
    before = snapshot(app)
    refused = lab.run_action(lab.lab_inputs(ssh_host, app, sha, plan="true"))
    assert refused.status == 1, refused.log
    assert "A deploy would be refused:** the host has changes to tracked files" in refused.summary
    assert "app/VERSION" in refused.summary
    assert snapshot(app) == before, changed(before, snapshot(app))
