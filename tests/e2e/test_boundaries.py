"""Never touch what isn't yours, end to end under load: a ref means what a person means by it, a
checkout never overwrites a file the host owns, the action's state is never written through a
symlink a commit put there, a color file may not take over a base service, and a pinned host key
connects to a stock sshd that offers every kind of key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lab import lab

from .conftest import Load
from .test_deploy import served, started_at
from .test_failures import only_error
from .test_operate import host_state


def test_a_branch_name_deploys_what_was_just_pushed_and_a_tag_its_own_commit(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    """The host's clone was made at v1, so its local `main` says v1 however far origin moves."""
    app.bootstrap("green")
    with Load(app.public_url("/api/v1/")) as load:
        for version, color in (("v2", "blue"), ("v3", "green")):
            sha = app.version(version)
            run = lab.run_action(lab.lab_inputs(ssh_host, app, "main"))
            assert run.status == 0, run.log
            assert served(app) == {"role": "backend", "color": color, "version": version}
            assert run.outputs["deployed-ref"] == sha and f"branch main at {sha[:12]}" in run.summary
        sha4 = app.version("v4")
        app.tag("release-4")
        app.version("v5")  # main moves on; the tag still means v4
        run = lab.run_action(lab.lab_inputs(ssh_host, app, "release-4"))
    assert run.status == 0, run.log
    assert served(app) == {"role": "backend", "color": "blue", "version": "v4"}
    assert run.outputs["deployed-ref"] == sha4 and f"tag release-4 at {sha4[:12]}" in run.summary
    assert load.failures == [] and len(load.statuses) > 10


def test_a_checkout_that_would_overwrite_a_file_the_host_owns_is_refused(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    """The host keeps its production .env untracked; a commit adds a .env by mistake."""
    app.bootstrap("green")
    env = app.app_dir / ".env"
    env.write_text("SECRET_KEY=production\n")
    lab.sh("chown", f"{lab.DEPLOY_USER}:{lab.DEPLOY_USER}", env)
    sha = app.commit("a .env committed by mistake", {"app/VERSION": "v2\n", ".env": "SECRET_KEY=from-the-repo\n"})
    before = host_state(app)
    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha))
        assert run.status != 0
        error = only_error(run)
        assert f"checking out {sha[:12]} would overwrite what the host has and git does not track" in error
        assert ".env; nothing was changed" in error and "git rm --cached PATH" in error
        assert env.read_text() == "SECRET_KEY=production\n" and host_state(app) == before

        # the fix the annotation gives: the repository stops tracking it
        (app.work / ".env").unlink()
        fixed = app.commit("stop tracking .env", {".gitignore": ".env\n"})
        run = lab.run_action(lab.lab_inputs(ssh_host, app, fixed))
    assert run.status == 0, run.log
    assert env.read_text() == "SECRET_KEY=production\n"
    assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}
    assert load.failures == [] and len(load.statuses) > 10


def test_the_actions_state_is_never_written_through_a_symlink_a_commit_put_there(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    """A first deploy of a commit that tracks .active_env as a link to the deploy user's keys."""
    keys = Path(f"/home/{lab.DEPLOY_USER}/.ssh/authorized_keys-canary")
    keys.parent.mkdir(exist_ok=True)
    keys.write_text("ssh-ed25519 AAAA canary\n")
    try:
        os.symlink(keys, app.work / ".active_env")
        sha = app.commit("a symlink where the action keeps its state", {"app/VERSION": "v1.1\n"})
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha))
        assert run.status == 0, run.log
        assert keys.read_text() == "ssh-ed25519 AAAA canary\n"
        active = app.app_dir / ".active_env"
        assert not active.is_symlink() and active.read_text() == "blue\n"
    finally:
        keys.unlink()


@pytest.mark.parametrize("app", [("v2", "bridge", "folders")], indirect=True, ids=["v2-bridge-folders"])
def test_a_color_file_that_defines_a_base_service_is_refused_before_anything_changes(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    app.bootstrap("green")
    db = next(c for c in app.containers("base") if c.labels["com.docker.compose.service"] == "db")
    db_started = started_at(db)
    blue = app.stack_file("blue")
    text = (
        (app.work / blue)
        .read_text()
        .replace("services:\n", "services:\n  db:\n    image: bluegreen-lab/debian:bookworm\n")
    )
    sha = app.commit("blue brings its own db", {blue: text, "app/VERSION": "v2\n"})
    before = host_state(app)
    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha))
    assert run.status != 0
    assert f"{blue} defines 'db', a service of {app.stack_file('base')}" in only_error(run)
    assert started_at(db) == db_started and host_state(app) == before and app.containers("blue") == []
    assert load.failures == [] and len(load.statuses) > 10


def test_a_pinned_host_key_connects_to_an_sshd_that_offers_every_kind_of_key(
    action_image: str, app: lab.LabApp
) -> None:
    """Debian's stock sshd has ed25519, ecdsa and rsa host keys; `ssh-keyscan -t ed25519` or one
    fingerprint pins one of them, and OpenSSH connects with it. So does the action."""
    stock = lab.start_sshd(host_keys=("ed25519", "ecdsa", "rsa"))
    try:
        app.bootstrap("green")
        (ed25519_line, ed25519_fingerprint), (_, ecdsa_fingerprint) = stock.pins["ed25519"], stock.pins["ecdsa"]
        pins = [
            {"known_hosts": ed25519_line, "fingerprint": ""},
            {"known_hosts": "", "fingerprint": ed25519_fingerprint},
            {"known_hosts": "", "fingerprint": ecdsa_fingerprint},
            {"known_hosts": "", "fingerprint": stock.pins["rsa"][1]},
        ]
        for number, pin in enumerate(pins, 2):
            run = lab.run_action(lab.lab_inputs(stock, app, app.version(f"v{number}"), **pin))
            assert run.status == 0, (pin, run.log)
            assert "host key verified" in run.summary
    finally:
        stock.stop()
