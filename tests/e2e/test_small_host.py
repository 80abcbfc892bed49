"""Months on a small host, end to end: a color's builds run in parallel on both Compose versions, the
app's secrets reach only the color being built, disk stays bounded to what the live and the kept
containers use, and a host the seed's script set up can be rolled back from its first deploy."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import docker
import pytest
import yaml
from lab import lab

from .conftest import Load
from .test_deploy import served
from .test_failures import only_error

# A build step that takes a while and says when it ran, after the COPY of VERSION, so each version
# busts the cache from there on.
TIMED_STEP = "RUN date +%s.%N > /build-start && sleep 3 && date +%s.%N > /build-end\n"


def build_window(image: str) -> tuple[float, float]:
    out = lab.sh(
        "docker", "run", "--rm", "--network", "none", "--entrypoint", "cat", image, "/build-start", "/build-end"
    )
    start, end = (float(line) for line in out.split())
    return start, end


@pytest.mark.parametrize("app", [("v1", "host"), ("v2", "host")], indirect=True, ids=["v1", "v2"])
def test_a_colors_services_build_in_parallel_and_a_failed_build_names_its_service(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    app.bootstrap("green")
    sha = app.commit(
        "v2: the frontend builds on its own", {**app.own_builds(TIMED_STEP), "app/VERSION": f"v2-{app.name}\n"}
    )
    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha))
        assert run.status == 0, run.log
        backend, frontend = build_window(f"{app.name}-app:blue"), build_window(f"{app.name}-front:blue")
        # Ordering, not speed: each build's slow step began before the other's ended.
        assert backend[0] < frontend[1] and frontend[0] < backend[1], (backend, frontend)

        broken = app.own_builds(TIMED_STEP, failing="frontend_green")
        run = lab.run_action(
            lab.lab_inputs(ssh_host, app, app.commit("v3: a broken frontend", {**broken, "app/VERSION": "v3\n"}))
        )
    assert run.status != 0
    assert "the build of frontend_green failed" in only_error(run)
    assert served(app) == {"role": "backend", "color": "blue", "version": f"v2-{app.name}"}
    assert load.failures == [] and len(load.statuses) > 10


SECRET_KEY = "django-insecure-Se3cr3t-0123456789abcdef"
DATABASE_URL = "postgres://app:p@ss w0rd'$HOME@db:5432/app"
TLS_LINES = ["-----BEGIN TEST KEY-----", "MIIsecretLineOneABCDEFG", "MIIsecretLineTwoHIJKLMN", "-----END TEST KEY-----"]
ENV = f'SECRET_KEY={SECRET_KEY}\nDATABASE_URL="{DATABASE_URL}"\nTLS_KEY="' + "\n".join(TLS_LINES) + '"\n'


def use_the_env(app: lab.LabApp) -> dict[str, str]:
    """The seed's Django way: ${SECRET_KEY} interpolated in the color's compose file, the rest from
    the env_file the action writes for it."""
    files = {}
    for color in ("blue", "green"):
        rel = app.stack_file(color)
        data = yaml.safe_load((app.work / rel).read_text())
        backend = data["services"][f"backend_{color}"]
        backend["environment"]["SECRET_KEY"] = "${SECRET_KEY}"
        backend["env_file"] = [f".bluegreen/{color}.env"]
        files[rel] = yaml.safe_dump(data, sort_keys=False)
    return files


def container_env(app: lab.LabApp, color: str) -> dict[str, str]:
    (backend,) = [c for c in app.containers(color) if c.labels["com.docker.compose.service"] == f"backend_{color}"]
    backend.reload()
    return dict(item.split("=", 1) for item in backend.attrs["Config"]["Env"])


@pytest.mark.parametrize("app", [("v2", "bridge")], indirect=True, ids=["v2-bridge"])
def test_the_apps_secrets_reach_the_color_being_built_and_nowhere_else(action_image: str, app: lab.LabApp) -> None:
    host = lab.start_sshd(log_commands=True)
    try:
        app.bootstrap("green")
        sha2 = app.commit("v2 reads its secrets", {**use_the_env(app), "app/VERSION": "v2\n"})
        with Load(app.public_url("/api/v1/")) as load:
            run = lab.run_action(lab.lab_inputs(host, app, sha2, env=ENV))
            assert run.status == 0, run.log
            env = container_env(app, "blue")
            assert env["SECRET_KEY"] == SECRET_KEY and env["DATABASE_URL"] == DATABASE_URL
            assert env["TLS_KEY"] == "\n".join(TLS_LINES)
            env_file = app.app_dir / ".bluegreen/blue.env"
            assert stat.S_IMODE(env_file.stat().st_mode) == 0o600 and env_file.owner() == lab.DEPLOY_USER
            assert (app.app_dir / ".bluegreen/blue.environ").stat().st_mode & 0o077 == 0
            tracked = lab.as_deploy("git", "-C", app.app_dir, "ls-files").split()
            assert not [path for path in tracked if path.startswith(".bluegreen")]

            # Nowhere else: not the log as a person sees it, the summary, the outputs, any command line
            # the host ran, or the action's state.
            secrets_ = [SECRET_KEY, DATABASE_URL, *TLS_LINES[1:3]]
            assert host.commands_log is not None
            elsewhere = {
                "log": "\n".join(run.shown),
                "summary": run.summary,
                "outputs": json.dumps(run.outputs),
                "host command lines": host.commands_log.read_text(),
                "journal": (app.app_dir / ".bluegreen/journal.jsonl").read_text(),
            }
            assert elsewhere["host command lines"]  # the log is real: it holds what the action ran
            assert {where: [s for s in secrets_ if s in text] for where, text in elsewhere.items()} == {
                where: [] for where in elsewhere
            }
            assert sum(line == f"::add-mask::{SECRET_KEY}" for line in run.log.splitlines()) == 1

            # Changed values change only the color being built; the kept one keeps what it had.
            sha3 = app.version("v3")
            run = lab.run_action(lab.lab_inputs(host, app, sha3, env=ENV.replace(SECRET_KEY, "rotated-Key-9876543210")))
            assert run.status == 0, run.log
            assert container_env(app, "green")["SECRET_KEY"] == "rotated-Key-9876543210"
            assert container_env(app, "blue")["SECRET_KEY"] == SECRET_KEY and app.kept_stopped("blue")

            run = lab.run_action(lab.lab_inputs(host, app, "", command="rollback", env=ENV))
        assert run.status == 0, run.log
        assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}
        assert container_env(app, "blue")["SECRET_KEY"] == SECRET_KEY
        assert load.failures == [] and len(load.statuses) > 10
    finally:
        host.stop()


def image_ids(app: lab.LabApp) -> set[str]:
    """The images this app's builds made, tagged or not (other tests build theirs meanwhile)."""
    mine = f"label=bluegreen-lab.app={app.name}"
    return set(lab.sh("docker", "image", "ls", "--quiet", "--no-trunc", "--filter", mine).split())


@pytest.mark.parametrize("app", [("v2", "bridge")], indirect=True, ids=["v2-bridge"])
def test_disk_stays_bounded_to_the_images_the_live_and_kept_containers_use(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {lab.LAB_IMAGE}\nRUN echo {app.name} > /unrelated\n")
    unrelated = f"bglab-unrelated:{app.name}"
    lab.sh("docker", "build", "--quiet", "--tag", unrelated, tmp_path)
    before = image_ids(app)
    app.bootstrap("green")
    with Load(app.public_url("/api/v1/")) as load:
        for version in range(2, 8):  # each version a new layer (its VERSION file, this app's own)
            run = lab.run_action(lab.lab_inputs(ssh_host, app, app.version(f"v{version}-{app.name}")))
            assert run.status == 0, run.log
        assert "**Freed:** 1 image this run replaced" in run.summary  # the image both services of a color run
        made = image_ids(app) - before
        used = {c.image.id for color in ("blue", "green") for c in app.containers(color)}
        assert made == used and len(used) == 2  # the live color's image and the kept one's
        assert docker.from_env().images.get(unrelated)  # another project's image survives

        run = lab.run_action(lab.lab_inputs(ssh_host, app, "", command="rollback"))
    assert run.status == 0, run.log
    assert served(app) == {"role": "backend", "color": "blue", "version": f"v6-{app.name}"}
    assert load.failures == [] and len(load.statuses) > 10
    subprocess.run(["docker", "image", "rm", unrelated], capture_output=True)
