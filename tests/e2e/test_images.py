"""Issue 21 end to end, on hosts that are separate machines (lab/hosts.py: their own dockerd and
disk), under load with no failed request, on Compose v1 and v2:

- images from a registry: a private registry in the lab (Debian's docker-registry, TLS from a lab
  CA, htpasswd; lab/registry.py); the colors name an image and build nothing; the action pulls it,
  logged in for one command only;
- build: runner: the action (in its container, with the runner's docker socket, as GitHub's runner
  runs it) builds each service once with this machine's docker (the runner's), and the hosts get the
  image over the action's SSH connection and build nothing."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lab import hosts, lab, registry

from .conftest import Load

pytestmark = pytest.mark.e2e

REPOSITORY = "lab/web"


@dataclass
class RegistryLab:
    registry: registry.Registry
    machines: list[hosts.Host]
    key: str

    def inputs(self, app: lab.LabApp, targets: list[hosts.Host], sha: str, **overrides: str) -> dict[str, str]:
        login = {
            "registry": f"{registry.NAME}:{registry.PORT}",
            "registry_username": self.registry.user,
            "registry_password": self.registry.password,
        }
        return hosts.fleet_inputs(targets, app, sha, self.key, **(login | overrides))


@pytest.fixture(scope="module")
def image_hosts(action_image: str) -> Iterator[tuple[list[hosts.Host], str]]:
    """Three separate hosts (img-1..3) for every test here, and the key that logs in to them."""
    root = lab.LAB_ROOT / "image-hosts"
    root.mkdir(parents=True, exist_ok=True)
    key, public = lab.client_key(root, "id_images")
    made = [hosts.start_host(f"img-{n}", public) for n in (1, 2, 3)]
    yield made, key
    for host in made:
        host.stop()


@pytest.fixture(scope="module")
def pull_lab(image_hosts: tuple[list[hosts.Host], str]) -> Iterator[RegistryLab]:
    machines, key = image_hosts
    made = registry.start_registry()
    for machine in machines:
        made.trust(machine)
    yield RegistryLab(made, machines, key)
    made.stop()


def publish(pull_lab: RegistryLab, app: lab.LabApp, version: str) -> str:
    """Build the lab app at `version` on this machine (as a team's CI does) and push it as :latest;
    returns its image id, which is what a host that pulls it has too."""
    context = Path(tempfile.mkdtemp(prefix="bluegreen-lab-web."))
    try:
        shutil.copytree(app.work / "app", context, dirs_exist_ok=True)
        (context / "VERSION").write_text(version + "\n")
        image = f"bluegreen-lab/registry-web:{version}"
        lab.sh("docker", "build", "--quiet", "--tag", image, context)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    pull_lab.registry.push(image, REPOSITORY, "latest")
    return lab.sh("docker", "image", "inspect", "--format", "{{.Id}}", image).strip()


def pull_colors(pull_lab: RegistryLab, app: lab.LabApp) -> str:
    """Commit colors that build nothing: both services of each run the registry's :latest."""
    files = {}
    for color in ("blue", "green"):
        name = app.stack_file(color)
        text = (app.work / name).read_text().replace("    build: ./app\n", "")
        files[name] = text.replace(
            f"image: {app.name}-app:{color}", f"image: {pull_lab.registry.ref(REPOSITORY, 'latest')}"
        )
        assert "build:" not in files[name] and REPOSITORY in files[name]
    return app.commit("the colors run the registry's image", files)


def no_login_left(host: hosts.Host) -> None:
    """Nothing of the run's login on the host: no login folder, nothing in the deploy user's config."""
    assert host.exec("sh", "-c", "ls -d /tmp/bluegreen-login.* 2>/dev/null || true").strip() == ""
    config = host.deploy("sh", "-c", "cat ~/.docker/config.json 2>/dev/null || true")
    assert registry.NAME not in config


def served(host: hosts.Host) -> tuple[str, str]:
    answer = hosts.served(host)
    return answer["color"], answer["version"]


def test_a_private_registry_pulled_a_moved_tag_a_wrong_password_and_a_rollback_that_never_pulls(
    pull_lab: RegistryLab,
) -> None:
    host = pull_lab.machines[0]
    app = hosts.fresh_fleet_app([host], "v1", also_reset=pull_lab.machines)
    try:
        first = publish(pull_lab, app, "r1")
        sha = pull_colors(pull_lab, app)
        inputs = pull_lab.inputs(app, [host], sha)
        with Load(host.url("/")) as load:
            run = lab.run_action(inputs, timeout=900)
        assert run.status == 0, run.log
        assert served(host) == ("blue", "r1")
        assert load.failures == [] and len(load.statuses) > 10
        assert "Images of blue" in run.summary and first.removeprefix("sha256:")[:12] in run.summary
        row = json.loads(run.outputs["hosts-json"])[0]
        assert row["images"] == {"backend_blue": first, "frontend_blue": first}
        lab.assert_no_secrets(run, inputs)
        no_login_left(host)

        # The tag moves (the team's CI pushed r2 as :latest): the next deploy runs the new image.
        second = publish(pull_lab, app, "r2")
        sha = app.commit("a change beside the image", {"NOTES": "r2\n"})
        with Load(host.url("/")) as load:
            run = lab.run_action(pull_lab.inputs(app, [host], sha), timeout=900)
        assert run.status == 0, run.log
        assert served(host) == ("green", "r2")
        assert load.failures == []
        assert json.loads(run.outputs["hosts-json"])[0]["images"]["backend_green"] == second

        # A wrong password: refused at the login, before any container changed; it is in no log.
        wrong = "not-the-registry-password-7"
        sha = app.commit("another change", {"NOTES": "r3\n"})
        inputs = pull_lab.inputs(app, [host], sha, registry_password=wrong)
        run = lab.run_action(inputs, timeout=900)
        assert run.status == 1, run.log
        assert f"logging in to {registry.NAME}:{registry.PORT} as {pull_lab.registry.user} failed" in run.log
        assert "unauthorized" in run.log.lower()
        lab.assert_no_secrets(run, inputs)
        assert f"::add-mask::{wrong}" in run.log  # masked before anything could print it
        assert served(host) == ("green", "r2")
        no_login_left(host)

        # A rollback starts blue's kept containers, on the image they ran (r1, not :latest), no login.
        no_login = {"registry": "", "registry_username": "", "registry_password": ""}
        run = lab.run_action(pull_lab.inputs(app, [host], "", command="rollback", **no_login), timeout=900)
        assert run.status == 0, run.log
        assert served(host) == ("blue", "r1")
        assert "Get blue's images" not in run.summary and "from | time" not in run.summary  # no images step
    finally:
        app.teardown()


def test_a_fleet_serves_one_image_everywhere_or_refuses_before_any_switch(pull_lab: RegistryLab) -> None:
    targets = pull_lab.machines[:2]
    app = hosts.fresh_fleet_app(targets, "v2", also_reset=pull_lab.machines)
    balancer = hosts.start_load_balancer(targets)
    try:
        publish(pull_lab, app, "r1")
        old = pull_lab.registry.ref(REPOSITORY, "latest")
        login = (
            f'docker --config "$d" login -u {pull_lab.registry.user} --password-stdin {registry.NAME}:{registry.PORT}'
        )
        targets[1].exec("sh", "-c", f'd=$(mktemp -d) && {login} >/dev/null && docker --config "$d" pull -q {old}; '
                        'rm -rf "$d"', input=pull_lab.registry.password)  # fmt: skip
        new = publish(pull_lab, app, "r2")  # :latest moved after pull-2 got it
        sha = pull_colors(pull_lab, app)

        # pull: missing keeps pull-2's older :latest: the fleet refuses before any host switches.
        with Load(balancer.url("/")) as load:
            run = lab.run_action(pull_lab.inputs(app, targets, sha, pull="missing"), timeout=900)
        assert run.status == 1, run.log
        assert "the hosts would serve different images" in run.log
        assert [served(h) for h in targets] == [("green", "v1")] * 2
        assert load.failures == []

        # pull: always: one digest, resolved once, on every host; both serve r2.
        with Load(balancer.url("/")) as load:
            run = lab.run_action(pull_lab.inputs(app, targets, sha), timeout=900)
        assert run.status == 0, run.log
        assert [served(h) for h in targets] == [("blue", "r2")] * 2
        assert load.failures == []
        rows = json.loads(run.outputs["hosts-json"])
        assert [r["images"] for r in rows] == [{"backend_blue": new, "frontend_blue": new}] * 2
        for machine in targets:
            no_login_left(machine)
    finally:
        balancer.stop()
        app.teardown()


# -- build: runner --------------------------------------------------------------------------------


def test_three_hosts_get_one_runner_build_and_a_one_line_change_sends_only_its_layer(
    image_hosts: tuple[list[hosts.Host], str],
) -> None:
    targets, key = image_hosts
    app = hosts.fresh_fleet_app(targets, "v2")
    balancer = hosts.start_load_balancer(targets)
    try:
        sha = app.version("v2")
        with Load(balancer.url("/")) as load:
            run = lab.run_action(hosts.fleet_inputs(targets, app, sha, key, build="runner"), workspace=app.work)
        assert run.status == 0, run.log
        assert load.failures == [] and len(load.statuses) > 10
        assert [hosts.served(h)["version"] for h in targets] == ["v2"] * 3
        built = hosts.runner_image(app, "backend_blue", sha)
        # every host runs the runner's very image (a build of its own would have an id of its own)
        assert [hosts.image_id(h, f"{app.name}-app:blue") for h in targets] == [built] * 3
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
        new = hosts.runner_image(app, "backend_green", second)
        change = hosts.layer_change(built, new)
        changed, overhead = change.changed, change.overhead  # overhead: the manifest and the config
        assert changed > 0
        for host in targets:
            assert hosts.image_id(host, f"{app.name}-app:green") == new
            sent = hosts.journal_images(host, app)["backend_green"]["sent"]
            assert isinstance(sent, int)
            assert changed <= sent - overhead <= changed * 1.1, (host.name, sent, changed, overhead)
    finally:
        balancer.stop()
        app.teardown()
        hosts.forget_runner_images(app)


def test_compose_v1_runner_build_and_a_workspace_at_another_commit_refused(
    image_hosts: tuple[list[hosts.Host], str],
) -> None:
    targets, key = image_hosts
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
        assert hosts.image_id(host, f"{app.name}-app:blue") == hosts.runner_image(app, "backend_blue", new)
    finally:
        app.teardown()
        hosts.forget_runner_images(app)


def test_a_cancel_during_the_runner_build_leaves_the_host_serving_and_the_action_ends_at_once(
    image_hosts: tuple[list[hosts.Host], str],
) -> None:
    targets, key = image_hosts
    host = targets[0]
    app = hosts.fresh_fleet_app([host], "v2", also_reset=targets)
    try:
        dockerfile = (app.work / "app/Dockerfile").read_text() + "RUN sleep 120\n"
        sha = app.commit("a build that takes minutes", {"app/Dockerfile": dockerfile})
        before = set(host.exec("docker", "image", "ls", "-q", "--no-trunc").split())
        with Load(host.url("/")) as load:
            running = lab.RunningAction(hosts.fleet_inputs([host], app, sha, key, build="runner"), workspace=app.work)
            running.wait_for_step("Get blue's images")
            running.cancel_like_the_runner()
            run = running.wait(90)  # the build's thread does not hold the action's exit
        assert run.status != 0
        assert "the run was cancelled (SIGINT/SIGTERM)" in run.summary
        assert load.failures == []
        assert hosts.served(host)["color"] == "green"
        assert set(host.exec("docker", "image", "ls", "-q", "--no-trunc").split()) == before  # nothing reached it
        assert not any(
            c.startswith("blue") or "_blue" in c for c in host.exec("docker", "ps", "--format", "{{.Names}}").split()
        )
    finally:
        app.teardown()
        hosts.forget_runner_images(app)
