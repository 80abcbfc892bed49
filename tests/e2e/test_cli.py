"""`pip install .` then `bluegreen deploy` against the lab host: the same engine as the action."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest
from lab import lab

from .test_deploy import served

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bluegreen_cli(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = tmp_path_factory.mktemp("cli-venv")
    venv.create(env_dir, with_pip=True)
    subprocess.run(
        [env_dir / "bin/pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        check=True,
        capture_output=True,
    )
    return env_dir / "bin/bluegreen"


def key_and_env(ssh_host: lab.SshHost, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The lab's deploy key in a file, and an environment with no GITHUB_* or BLUEGREEN_* of its own."""
    key_file = tmp_path / "key"
    key_file.write_text(ssh_host.key)
    key_file.chmod(0o600)
    return key_file, {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "BLUEGREEN_"))}


def test_pip_installed_cli_deploys_and_reports_status(
    bluegreen_cli: Path, ssh_host: lab.SshHost, app: lab.LabApp, tmp_path: Path
) -> None:
    app.bootstrap("green")
    sha = app.version("v2")
    key_file, env = key_and_env(ssh_host, tmp_path)
    inputs = lab.lab_inputs(ssh_host, app, sha)
    # Flags for some inputs, BLUEGREEN_* variables for the others.
    flags = [
        "--host",
        "127.0.0.1",
        "--port",
        inputs["port"],
        "--username",
        "deploy",
        "--key-file",
        str(key_file),
        "--app-dir",
        inputs["app-dir"],
        "--ref",
        sha,
    ]
    env |= {
        f"BLUEGREEN_{name.upper().replace('-', '_')}": inputs[name]
        for name in (
            "known-hosts",
            "project-name",
            "blue-health-urls",
            "green-health-urls",
            "nginx-container",
            "public-url",
        )
    }

    done = subprocess.run(
        [str(bluegreen_cli), "deploy", *flags],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Deployed" in done.stdout and "green → blue" in done.stdout and "active-color=blue" in done.stdout
    assert "::group::" not in done.stdout
    assert not any(line.strip() in done.stdout for line in ssh_host.key.splitlines()[1:-1])
    assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}

    # status needs no deploy-only input: no ref, no health URLs, no public-url
    deploy_only = ("BLUEGREEN_BLUE_HEALTH_URLS", "BLUEGREEN_GREEN_HEALTH_URLS", "BLUEGREEN_PUBLIC_URL")
    status = subprocess.run(
        [str(bluegreen_cli), "status", *flags[:-2]],
        env={k: v for k, v in env.items() if k not in deploy_only},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["live-color"] == "blue" and report["active-env"] == "blue"
    assert len(report["containers"]["blue"]) == 2 and all("(running)" in c for c in report["containers"]["blue"])
    assert len(report["containers"]["green"]) == 2 and all("(stopped)" in c for c in report["containers"]["green"])
    assert report["recent-deploys"][0]["ref"] == sha

    bad = subprocess.run(
        [str(bluegreen_cli), "deploy", *flags, "--health-timeout", "soon"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--health-timeout: 'soon' is not a duration" in bad.stderr


def test_the_cli_holds_a_canary_shows_it_in_status_and_aborts_it(
    bluegreen_cli: Path, ssh_host: lab.SshHost, app: lab.LabApp, tmp_path: Path
) -> None:
    app.bootstrap("green")
    sha = app.version("v2")
    key_file, env = key_and_env(ssh_host, tmp_path)
    inputs = lab.lab_inputs(ssh_host, app, sha)
    names = (
        "port",
        "known-hosts",
        "app-dir",
        "project-name",
        "blue-health-urls",
        "green-health-urls",
        "nginx-container",
    )
    env |= {f"BLUEGREEN_{name.upper().replace('-', '_')}": inputs[name] for name in names}
    flags = ["--host", "127.0.0.1", "--username", "deploy", "--key-file", str(key_file)]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bluegreen_cli), *args, *flags], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip

    canary = ["--strategy", "canary", "--canary-steps", "30,hold", "--canary-hold", "2", "--canary-min-requests", "0"]
    held = cli("deploy", "--ref", sha, *canary)
    assert held.returncode == 0, held.stdout + held.stderr
    assert "held at 30%" in held.stdout and "Canary step unjudged" in held.stderr  # no traffic: said so
    status = json.loads(cli("status").stdout)
    assert status["live-color"] == "green"
    assert status["canary"] == {
        "held": "30%",
        "from": "green",
        "to": "blue",
        "ref": sha,
        "since": status["canary"]["since"],
    }
    aborted = cli("abort")
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert "Aborted the canary" in aborted.stdout
    assert served(app) == {"role": "backend", "color": "green", "version": "v1"}
    assert "canary" not in json.loads(cli("status").stdout)
    again = cli("abort")  # done already: says so, changes nothing
    assert again.returncode == 0 and "was aborted on this host already" in again.stdout, again.stdout + again.stderr
    promoted = cli("promote")
    assert promoted.returncode == 1 and "no canary is held on this host" in promoted.stderr
