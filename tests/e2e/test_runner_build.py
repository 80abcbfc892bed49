"""Issue 21, `build: runner`, end to end: the action (in its container, with the runner's docker
socket, as GitHub's runner runs it) builds each service once with this machine's docker (the
runner's), and hosts that are separate machines (lab/hosts.py: their own dockerd and disk) get the
image over the action's SSH connection and build nothing. Under load through the load balancer, no
request fails."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from lab import hosts, lab

from bluegreen.shipping import Saved, read_saved

from .conftest import Load

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ship_hosts(action_image: str) -> Iterator[tuple[list[hosts.Host], str]]:
    root = lab.LAB_ROOT / "ship-hosts"
    root.mkdir(parents=True, exist_ok=True)
    key, public = lab.client_key(root, "id_ship")
    made = [hosts.start_host(f"ship-{n}", public) for n in (1, 2, 3)]
    yield made, key
    for host in made:
        host.stop()


def runner_image(app: lab.LabApp, service: str, sha: str) -> str:
    """The image id the runner built for `service` at `sha` (tagged by commit on the runner)."""
    tag = f"bluegreen/{app.name}-{service}:{sha[:12]}".lower()
    return lab.sh("docker", "image", "inspect", "--format", "{{.Id}}", tag).strip()


def forget_runner_images(app: lab.LabApp) -> None:
    """The images the action built on this machine (the runner) for `app`: removed with it."""
    found = lab.sh("docker", "images", "--filter", f"reference=bluegreen/{app.name}-*", "-q").split()
    if found:
        lab.sh("docker", "image", "rm", "--force", *dict.fromkeys(found))


def host_image(host: hosts.Host, image: str) -> str:
    return host.exec("docker", "image", "inspect", "--format", "{{.Id}}", image).strip()


def saved(image_id: str, folder: Path) -> Saved:
    return read_saved(iter(docker.from_env().api.get_image(image_id)), folder)


def last_images(host: hosts.Host, app: lab.LabApp) -> dict[str, dict[str, object]]:
    """The images the journal's last entry records."""
    text = host.deploy("cat", f"{app.app_dir}/.bluegreen/journal.jsonl")
    images: dict[str, dict[str, object]] = json.loads(text.strip().splitlines()[-1])["images"]
    return images


def test_three_hosts_get_one_runner_build_and_a_one_line_change_sends_only_its_layer(
    ship_hosts: tuple[list[hosts.Host], str],
) -> None:
    targets, key = ship_hosts
    app = hosts.fresh_fleet_app(targets, "v2")
    balancer = hosts.start_load_balancer(targets)
    try:
        sha = app.version("v2")
        with Load(balancer.url("/")) as load:
            run = lab.run_action(hosts.fleet_inputs(targets, app, sha, key, build="runner"), workspace=app.work)
        assert run.status == 0, run.log
        assert load.failures == [] and len(load.statuses) > 10
        assert [hosts.served(h)["version"] for h in targets] == ["v2"] * 3
        built = runner_image(app, "backend_blue", sha)
        # every host runs the runner's very image (a build of its own would have an id of its own)
        assert [host_image(h, f"{app.name}-app:blue") for h in targets] == [built] * 3
        assert all(r["images"] == {"backend_blue": built} for r in json.loads(run.outputs["hosts-json"]))
        assert "the runner (" in run.summary
        assert all("127.0.0.1:" not in h.exec("docker", "image", "ls", "--format", "{{.Repository}}") for h in targets)

        # One line of the app changes: each host is sent that layer (and the image's config and
        # manifest), never the layers it already has.
        second = app.version("v3")
        with Load(balancer.url("/")) as load:
            run = lab.run_action(hosts.fleet_inputs(targets, app, second, key, build="runner"), workspace=app.work)
        assert run.status == 0, run.log
        assert load.failures == []
        assert [(hosts.served(h)["color"], hosts.served(h)["version"]) for h in targets] == [("green", "v3")] * 3
        new = runner_image(app, "backend_green", second)
        with tempfile.TemporaryDirectory() as folder:
            before, after = saved(built, Path(folder) / "old"), saved(new, Path(folder) / "new")
        layers = json.loads(after.manifest)["layers"]
        changed = sum(layer["size"] for layer in layers if layer["digest"] not in before.blobs)
        overhead = len(after.manifest) + after.blobs[after.image_id].size  # the manifest and the config
        assert changed > 0
        for host in targets:
            assert host_image(host, f"{app.name}-app:green") == new
            sent = last_images(host, app)["backend_green"]["sent"]
            assert isinstance(sent, int)
            assert changed <= sent - overhead <= changed * 1.1, (host.name, sent, changed, overhead)
    finally:
        balancer.stop()
        app.teardown()
        forget_runner_images(app)


def test_compose_v1_runner_build_and_a_workspace_at_another_commit_refused(
    ship_hosts: tuple[list[hosts.Host], str],
) -> None:
    targets, key = ship_hosts
    host = targets[0]
    app = hosts.fresh_fleet_app([host], "v1", also_reset=targets)
    try:
        old = app.version("v2")
        new = app.version("v3")  # the workspace is at `new`
        run = lab.run_action(hosts.fleet_inputs([host], app, old, key, build="runner"), workspace=app.work)
        assert run.status == 1, run.log
        assert f"which is at {new[:12]}, not at {old[:12]}" in run.log
        assert hosts.served(host)["color"] == "green"

        with Load(host.url("/")) as load:
            run = lab.run_action(hosts.fleet_inputs([host], app, new, key, build="runner"), workspace=app.work)
        assert run.status == 0, run.log
        assert load.failures == []
        assert hosts.served(host)["version"] == "v3"
        assert host_image(host, f"{app.name}-app:blue") == runner_image(app, "backend_blue", new)
    finally:
        app.teardown()
        forget_runner_images(app)


def test_a_cancel_during_the_runner_build_leaves_the_host_serving_and_the_action_ends_at_once(
    ship_hosts: tuple[list[hosts.Host], str],
) -> None:
    targets, key = ship_hosts
    host = targets[0]
    app = hosts.fresh_fleet_app([host], "v2", also_reset=targets)
    try:
        dockerfile = (app.work / "app/Dockerfile").read_text() + "RUN sleep 120\n"
        sha = app.commit("a build that takes minutes", {"app/Dockerfile": dockerfile})
        before = host.exec("docker", "image", "ls", "-q", "--no-trunc")
        with Load(host.url("/")) as load:
            running = lab.RunningAction(hosts.fleet_inputs([host], app, sha, key, build="runner"), workspace=app.work)
            running.wait_for_step("Get blue's images")
            running.cancel_like_the_runner()
            run = running.wait(90)  # the build's thread does not hold the action's exit
        assert run.status != 0
        assert "the run was cancelled (SIGINT/SIGTERM)" in run.summary
        assert load.failures == []
        assert hosts.served(host)["color"] == "green"
        assert host.exec("docker", "image", "ls", "-q", "--no-trunc") == before  # nothing reached the host
        assert not any(
            c.startswith("blue") or "_blue" in c for c in host.exec("docker", "ps", "--format", "{{.Names}}").split()
        )
    finally:
        app.teardown()
        forget_runner_images(app)
