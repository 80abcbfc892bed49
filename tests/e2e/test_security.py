"""Issue 5 end to end: pinned host keys, keys and passphrases, hostile input through every input, and
one clear error for each mistake. Every run also asserts that no key line or passphrase is shown
(lab.assert_no_secrets)."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest
from lab import lab

from bluegreen.config import INPUTS

MARKER = Path("/tmp/bluegreen-pwned")
PWN = f"touch {MARKER}"


def host_state(app: lab.LabApp) -> tuple[str, list[str], bool]:
    head = lab.as_deploy("git", "-C", app.app_dir, "rev-parse", "HEAD").strip()
    ids = sorted(
        c.id
        for c in docker.from_env().containers.list(ignore_removed=True, all=True)
        if c.labels.get("com.docker.compose.project.working_dir") == str(app.app_dir)
    )
    return head, ids, (app.app_dir / ".bluegreen").exists()


def errors(run: lab.ActionRun) -> list[str]:
    return run.commands("error")


@pytest.fixture
def live_app(ssh_host: lab.SshHost, app: lab.LabApp) -> lab.LabApp:
    app.bootstrap("green")
    return app


def test_wrong_pin_is_refused_before_any_command(live_app: lab.LabApp, ssh_host: lab.SshHost) -> None:
    before = host_state(live_app)
    sha = live_app.version("v2")
    for pin in (
        {"fingerprint": "SHA256:" + "A" * 43, "known_hosts": ""},
        {
            "known_hosts": ssh_host.known_hosts.rsplit(" ", 1)[0]
            + " AAAAC3NzaC1lZDI1NTE5AAAAIEEtIhgE4l/mD3lJv1ZfG8Kk7n0wR6m6r7Eo1C2eQYgL"
        },
    ):
        run = lab.run_action(lab.lab_inputs(ssh_host, live_app, sha, **pin))
        assert run.status != 0
        (error,) = errors(run)
        assert "title=Deploy failed at Connect" in error and "host key mismatch" in error
        assert ssh_host.fingerprint in error and "set fingerprint to" in error
        assert host_state(live_app) == before


def test_several_pins_accept_whichever_key_the_server_presents(live_app: lab.LabApp, ssh_host: lab.SshHost) -> None:
    pins = f"SHA256:{'B' * 43}\n{ssh_host.fingerprint}"
    run = lab.run_action(lab.lab_inputs(ssh_host, live_app, live_app.version("v2"), known_hosts="", fingerprint=pins))
    assert run.status == 0, run.log


def test_missing_pin_is_refused_unless_explicitly_skipped(live_app: lab.LabApp, ssh_host: lab.SshHost) -> None:
    before = host_state(live_app)
    sha = live_app.version("v2")
    run = lab.run_action(lab.lab_inputs(ssh_host, live_app, sha, known_hosts=""))
    assert run.status != 0
    (error,) = errors(run)
    assert error.startswith("::error title=Invalid input%3A known-hosts::") and "ssh-keyscan" in error
    assert host_state(live_app) == before

    run = lab.run_action(lab.lab_inputs(ssh_host, live_app, sha, known_hosts="", insecure_skip_host_key_check="true"))
    assert run.status == 0, run.log
    assert any(line.startswith("::warning title=Host key not checked::") for line in run.commands("warning"))


def test_encrypted_key_with_passphrase(live_app: lab.LabApp, ssh_host: lab.SshHost) -> None:
    key, public = lab.client_key(ssh_host.root, "id_encrypted", passphrase="correct horse battery")
    lab.authorize(ssh_host, public)
    sha = live_app.version("v2")
    run = lab.run_action(lab.lab_inputs(ssh_host, live_app, sha, key=key, passphrase="wrong horse"))
    assert run.status != 0
    (error,) = errors(run)
    assert "input 'passphrase' does not decrypt the key" in error

    run = lab.run_action(lab.lab_inputs(ssh_host, live_app, sha, key=key, passphrase="correct horse battery"))
    assert run.status == 0, run.log
    assert run.outputs["active-color"] == "blue"


HOSTILE: dict[str, str] = {
    "plan": f"true$({PWN})",
    "config": f"settings$({PWN}).yml",
    "host": f"127.0.0.1;{PWN}",
    "port": f"22$({PWN})",
    "username": f"deploy`{PWN}`",
    "key": f"-----BEGIN OPENSSH PRIVATE KEY-----\n$({PWN})\n-----END OPENSSH PRIVATE KEY-----",
    "known-hosts": f"[127.0.0.1]:22 ssh-ed25519 $({PWN})",
    "fingerprint": f"SHA256:$({PWN})",
    "insecure-skip-host-key-check": f"true;{PWN}",
    "connect-timeout": f"20;{PWN}",
    "connect-retries": f"$({PWN})",
    "app-dir": f"/home/deploy/apps/x;{PWN}",
    "ref": f"--upload-pack={PWN}",
    "command": f"deploy;{PWN}",
    "project-name": f"x;{PWN}",
    "base-compose-file": "../../../etc/passwd",
    "compose-file": "/etc/{color}.yml",
    "blue-health-urls": f"http://127.0.0.1:1/\n;{PWN}",
    "green-health-urls": f"http://127.0.0.1:1/`{PWN}`",
    "health-timeout": f"60;{PWN}",
    "health-interval": f"$({PWN})",
    "upstream-file": "nginx/{color}/../../../../etc/shadow",
    "upstream-target": "--help",
    "nginx-container": f"--privileged;{PWN}",
    "nginx-sudo": f"true;{PWN}",
    "public-url": f"http://127.0.0.1:1/$({PWN})\n",
    "public-url-status": f"2xx $({PWN})",
    "public-url-insecure": f"true;{PWN}",
    "pre-switch-command": f"$({PWN}) migrate",
    "pre-switch-timeout": f"600;{PWN}",
    "lb-detach-command": f"sh -c true\n$({PWN})",
    "lb-attach-command": f"--$({PWN})",
    "lb-timeout": f"300;{PWN}",
    "drain-timeout": f"1 && {PWN}",
    "keep-previous": f"none;{PWN}",
    "host-changes": f"stash;{PWN}",
    "build": f"runner;{PWN}",
    "pull": f"always;{PWN}",
    "registry": f"ghcr.io;{PWN}",
    "registry-username": f"ci$({PWN})",
    "strategy": f"canary$({PWN})",
    "canary-steps": f"10,$({PWN})",
    "canary-hold": f"60$({PWN})",
    "canary-sticky": f"cookie:$({PWN})",
    "canary-max-5xx": f"1%$({PWN})",
    "canary-min-requests": f"20;{PWN}",
    "lock-timeout": f"`{PWN}`",
    "env": f"APP_MODE=1\n$({PWN})=1",
    "vars": f"APP_MODE=1\n$({PWN})=1",
    "prune": f"false;{PWN}",
    "batch-size": f"1;{PWN}",
    "on-host-failure": f"stop;{PWN}",
    "host-url": f"http://127.0.0.1:1/$({PWN})\n",
    "proxy-jump": f"deploy@127.0.0.1;{PWN}",
    "proxy-key": f"-----BEGIN OPENSSH PRIVATE KEY-----\n$({PWN})\n-----END OPENSSH PRIVATE KEY-----",
    "proxy-known-hosts": f"[127.0.0.1]:22 ssh-ed25519 $({PWN})",
}
# A passphrase is secret data: any text is a valid passphrase, and it never reaches the host. A
# registry password is any text too; it reaches the host only on stdin (tests/unit/test_images.py).
NOT_VALIDATED = {"passphrase", "registry-password"}


def test_every_input_is_covered_by_a_hostile_value() -> None:
    assert set(HOSTILE) | NOT_VALIDATED == {spec.name for spec in INPUTS}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_is_refused_with_a_clear_error_and_nothing_runs(
    name: str, live_app: lab.LabApp, ssh_host: lab.SshHost
) -> None:
    MARKER.unlink(missing_ok=True)
    before = host_state(live_app)
    run = lab.run_action(
        lab.lab_inputs(ssh_host, live_app, live_app.version("v2"), **{name.replace("-", "_"): HOSTILE[name]})
    )
    assert run.status != 0
    (error,) = errors(run)
    assert f"input '{name}'" in error.replace("%3A", ":")
    assert "Fix" in error
    assert not MARKER.exists()
    assert host_state(live_app) == before


def test_clear_errors_for_host_side_mistakes(live_app: lab.LabApp, ssh_host: lab.SshHost) -> None:
    sha = live_app.version("v2")
    unauthorized, _ = lab.client_key(ssh_host.root, "id_unauthorized")
    closed = lab.free_port()
    cases = {
        "nothing listens": ({"port": str(closed)}, f"cannot reach 127.0.0.1:{closed} (connection refused)"),
        "auth refused": ({"key": unauthorized}, "authentication refused for deploy@127.0.0.1"),
        "not in the docker group": ({"username": lab.OUTSIDER}, f"{lab.OUTSIDER} may not use docker on the host"),
        "app-dir missing": (
            {"app_dir": "/home/deploy/apps/missing"},
            "app-dir /home/deploy/apps/missing is missing or not a git checkout",
        ),
        "ref not found": ({"ref": "0" * 40}, f"ref {'0' * 40} was not found"),
        "compose file missing": (
            {"compose_file": "docker-compose.{color}.missing.yml"},
            "docker-compose.blue.missing.yml does not exist at",
        ),
        "upstream file missing": (
            {"upstream_file": "nginx/missing.{color}.conf"},
            "nginx/missing.blue.conf does not exist at",
        ),
        "nginx container missing": (
            {"nginx_container": "no-such-nginx"},
            "nginx container 'no-such-nginx' is not running",
        ),
        "health URL unreachable": (
            {"blue_health_urls": f"http://127.0.0.1:{closed}/", "health_timeout": "3"},
            f"http://127.0.0.1:{closed}/ did not answer 2xx within 3s (last: connection refused",
        ),
    }
    for case, (overrides, message) in cases.items():
        before = host_state(live_app)
        run = lab.run_action(lab.lab_inputs(ssh_host, live_app, sha, **overrides))
        assert run.status != 0, case
        (error,) = errors(run)
        assert message in error, (case, error)
        assert "Fix%3A" in error or "Fix:" in error, case
        if case != "health URL unreachable":
            assert host_state(live_app)[0] == before[0], case
    assert lab.urllib_open(live_app.public_url("/api/v1/")).status == 200
