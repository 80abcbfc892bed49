"""The starter app (examples/starter), deployed exactly as it is, on a bare lab host of its own (its own
dockerd, disk and sshd): the README's host checklist (clone into the settings file's app-dir, the
fingerprint line `ssh-keygen -lf` prints), then its workflow's inputs (config: bluegreen.yml from the
workspace, the rest from secrets). A first deploy with nothing running, a second, and a rollback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from lab import hosts, lab

from bluegreen.config import INPUTS

pytestmark = pytest.mark.e2e

STARTER = lab.REPO_ROOT / "examples/starter"
SETTINGS = yaml.safe_load((STARTER / "bluegreen.yml").read_text())


@pytest.fixture(scope="module")
def host(action_image: str) -> Iterator[tuple[hosts.Host, str]]:
    root = lab.LAB_ROOT / "starter"
    root.mkdir(parents=True, exist_ok=True)
    key, public = lab.client_key(root, "id_starter")
    made = hosts.start_host("starter", public)
    hosts.load_images(made, "python:3.12-slim", "nginx:1.27-alpine")  # what its compose files build from
    yield made, key
    made.stop()


def repository(root: Path) -> tuple[Path, Path]:
    """The user's repository, as a copy of the starter: (its work clone, its origin)."""
    work, origin = root / "work", root / "origin.git"
    for path in (work, origin):
        shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(STARTER, work)
    lab.sh("git", "init", "--quiet", "--bare", "--initial-branch=main", origin)
    lab.sh("git", "-C", work, "init", "--quiet", "--initial-branch=main")
    lab.sh("git", "-C", work, "remote", "add", "origin", origin)
    return work, origin


def push(work: Path, message: str) -> str:
    lab.sh("git", "-C", work, "add", "-A")
    lab.sh(*lab.git_commit(work, message))
    lab.sh("git", "-C", work, "push", "--quiet", "origin", "HEAD:main")
    return lab.sh("git", "-C", work, "rev-parse", "HEAD").strip()


def served(host: hosts.Host) -> dict[str, str]:
    answer: dict[str, str] = json.loads(host.exec("curl", "-fsS", "http://127.0.0.1/"))
    return answer


def test_the_starter_app_deploys_as_it_is_on_a_bare_host(host: tuple[hosts.Host, str]) -> None:
    machine, key = host
    machine.reset()
    machine.use_compose("v2")
    work, origin = repository(lab.LAB_ROOT / "starter")
    first = push(work, "the starter app")
    # The checklist, on the host: the clone where bluegreen.yml's app-dir says, as the deploy user.
    machine.deploy("git", "clone", "--quiet", str(origin), SETTINGS["app-dir"])
    fingerprint = machine.exec("ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub").strip()  # pasted whole
    secrets = {"host": machine.address, "username": lab.DEPLOY_USER, "key": key, "fingerprint": fingerprint}
    inputs = {spec.name: spec.default for spec in INPUTS} | secrets | {"config": "bluegreen.yml"}

    run = lab.run_action(inputs | {"ref": first}, workspace=work, timeout=900)
    assert run.status == 0, run.log
    assert "First deploy" in run.summary
    assert served(machine) == {"color": "blue", "version": "1"}

    (work / "app/VERSION").write_text("2\n")
    second = push(work, "version 2")
    run = lab.run_action(inputs | {"ref": second}, workspace=work, timeout=900)
    assert run.status == 0, run.log
    assert served(machine) == {"color": "green", "version": "2"}

    run = lab.run_action(inputs | {"ref": second, "command": "rollback"}, workspace=work, timeout=600)
    assert run.status == 0, run.log
    assert served(machine) == {"color": "blue", "version": "1"}
