"""Issue 17 end to end, on hosts that are separate machines (lab/hosts.py: each its own dockerd, disk
and sshd), behind a load balancer that never retries on another host. Under load through it, no
request fails, whatever the fleet does: roll, switch at once, refuse, switch back or stop."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from lab import hosts, lab

from .conftest import Load


@pytest.fixture(scope="module")
def lab_hosts(action_image: str) -> Iterator[tuple[list[hosts.Host], str, str]]:
    """Three hosts (web-1..3) and a bastion; the deploy key, and the bastion's own key."""
    root = lab.LAB_ROOT / "hosts"
    root.mkdir(parents=True, exist_ok=True)
    key, public = lab.client_key(root, "id_fleet")
    jump_key, jump_public = lab.client_key(root, "id_jump")
    made = [hosts.start_host(f"web-{n}", public) for n in (1, 2, 3)]
    made.append(hosts.start_host("bastion", jump_public, dockerd=False))
    yield made, key, jump_key
    for host in made:
        host.stop()


@pytest.fixture
def fleet(request: pytest.FixtureRequest, lab_hosts: tuple[list[hosts.Host], str, str]) -> Iterator[Fleet]:
    made, key, jump_key = lab_hosts
    count = getattr(request, "param", ("v2", 3))
    compose, size = count
    targets = made[:size]
    app = hosts.fresh_fleet_app(targets, compose, also_reset=made[:3])
    balancer = hosts.start_load_balancer(targets)
    yield Fleet(targets, made[3], app, key, jump_key, balancer)
    balancer.stop()
    app.teardown()


class Fleet:
    def __init__(
        self,
        targets: list[hosts.Host],
        bastion: hosts.Host,
        app: lab.LabApp,
        key: str,
        jump_key: str,
        balancer: hosts.LoadBalancer,
    ) -> None:
        self.hosts, self.bastion, self.app, self.key, self.jump_key, self.lb = (
            targets,
            bastion,
            app,
            key,
            jump_key,
            balancer,
        )

    def inputs(self, sha: str, **overrides: str) -> dict[str, str]:
        return hosts.fleet_inputs(self.hosts, self.app, sha, self.key, **overrides)

    def serves(self) -> list[dict[str, str]]:
        """What each host's nginx serves: the backend's color and version."""
        return [{k: hosts.served(h)[k] for k in ("color", "version")} for h in self.hosts]

    def run(self, sha: str, clients: int = 1, **overrides: str) -> tuple[lab.ActionRun, Load]:
        with Load(self.lb.url("/"), clients=clients) as load:
            run = lab.run_action(self.inputs(sha, **overrides), timeout=900)
        return run, load


def served_everywhere(fleet: Fleet, color: str, version: str) -> None:
    assert fleet.serves() == [{"color": color, "version": version}] * len(fleet.hosts)


def rows(run: lab.ActionRun) -> list[dict[str, object]]:
    return list(json.loads(run.outputs["hosts-json"]))


ONE_HOST = pytest.mark.parametrize("fleet", [("v1", 1), ("v2", 1)], indirect=True, ids=["v1", "v2"])


@ONE_HOST
def test_one_separate_host_deploys_with_zero_failed_requests(fleet: Fleet) -> None:
    sha = fleet.app.version("v2")
    run, load = fleet.run(sha)
    assert run.status == 0, run.log
    assert load.failures == [] and len(load.statuses) > 20
    served_everywhere(fleet, "blue", "v2")
    assert run.outputs["active-color"] == "blue" and run.outputs["deployed-ref"] == sha
    assert rows(run) == [
        {
            "host": fleet.hosts[0].address,
            "active-color": "blue",
            "deployed-ref": sha,
            "switched": True,
            "rolled-back": False,
            "images": {},  # built on the host: no image pulled or shipped
        }
    ]


@ONE_HOST
def test_one_separate_host_refuses_an_unhealthy_build_and_keeps_serving(fleet: Fleet) -> None:
    sha = fleet.app.version("v2", status=503)
    run, load = fleet.run(sha, health_timeout="5")
    assert run.status != 0
    (error,) = run.commands("error")
    assert "title=Deploy failed at Health-check blue" in error
    assert load.failures == []
    served_everywhere(fleet, "green", "v1")
    assert run.outputs["switched"] == "false"


def test_three_hosts_rolling_one_at_a_time(fleet: Fleet) -> None:
    sha = fleet.app.version("v2")
    run, load = fleet.run(sha)
    assert run.status == 0, run.log
    assert load.failures == [] and len(load.statuses) > 20
    served_everywhere(fleet, "blue", "v2")
    assert [r["active-color"] for r in rows(run)] == ["blue"] * 3
    assert run.outputs["switched"] == "true" and run.outputs["deployed-ref"] == sha
    # one host at a time, in order; none built after the first switch
    log = run.stdout
    switches = [log.index(f"[{h.address}] Switch nginx to blue: ok") for h in fleet.hosts]
    assert switches == sorted(switches)
    assert max(log.index(f"[{h.address}] Health-check blue: ok") for h in fleet.hosts) < switches[0]
    assert f"Deployed `{sha[:12]}` on 3 hosts: green → blue" in run.summary


@pytest.mark.parametrize("fleet", [("v1", 2)], indirect=True, ids=["v1"])
def test_two_hosts_at_once(fleet: Fleet) -> None:
    sha = fleet.app.version("v2")
    run, load = fleet.run(sha, batch_size="100%")
    assert run.status == 0, run.log
    assert load.failures == []
    served_everywhere(fleet, "blue", "v2")
    # both switched before either was asked to stay: one batch
    log = run.stdout
    second_switch = max(log.index(f"[{h.address}] Switch nginx to blue: ok") for h in fleet.hosts)
    assert second_switch < min(
        log.index(f"[{h.address}] Wait for the rest of the fleet to switch: ok") for h in fleet.hosts
    )


def test_a_failed_health_check_on_the_last_host_switches_nothing_anywhere(fleet: Fleet) -> None:
    hosts.set_dotenv(fleet.hosts[2], fleet.app, "LAB_STATUS=503\n")  # web-3's copy of the new version fails
    sha = fleet.app.version("v2")
    run, load = fleet.run(sha, health_timeout="5")
    assert run.status != 0
    assert load.failures == []
    served_everywhere(fleet, "green", "v1")
    assert [r["switched"] for r in rows(run)] == [False] * 3
    assert "Switch nginx to blue" not in run.stdout
    assert "every host serves what it served before (green)" in run.summary
    assert any(f"{fleet.hosts[2].address} failed at Health-check blue" in e for e in run.commands("error"))


def test_a_failure_after_the_first_host_switched_puts_it_back(fleet: Fleet) -> None:
    """web-2's new color fails through its nginx only (its health check passes): web-2 switches back
    itself, web-1, already switched, switches back too, and web-3 never switches."""
    hosts.set_dotenv(fleet.hosts[1], fleet.app, "LAB_PROXIED_STATUS=502\n")
    sha = fleet.app.version("v2")
    run, load = fleet.run(sha)
    assert run.status != 0
    assert load.failures == []
    served_everywhere(fleet, "green", "v1")
    first, second, third = rows(run)
    assert first["rolled-back"] is True and second["rolled-back"] is True and third["rolled-back"] is False
    assert run.outputs["active-color"] == "green" and run.outputs["switched"] == "false"
    assert "host-url http://127.0.0.1:8080/api/v1/ did not answer 2xx or 3xx" in run.stdout
    journal = fleet.hosts[0].exec("cat", f"{fleet.app.app_dir}/.bluegreen/journal.jsonl")
    assert [json.loads(line)["result"] for line in journal.splitlines()][-2:] == ["switched-back", "failed"]
    # a rerun, once web-2 is fixed, deploys the whole fleet
    hosts.set_dotenv(fleet.hosts[1], fleet.app, "")
    run, load = fleet.run(sha)
    assert run.status == 0, run.log
    assert load.failures == []
    served_everywhere(fleet, "blue", "v2")


def test_stop_leaves_the_documented_split(fleet: Fleet) -> None:
    hosts.set_dotenv(fleet.hosts[1], fleet.app, "LAB_PROXIED_STATUS=502\n")
    sha = fleet.app.version("v2")
    run, load = fleet.run(sha, on_host_failure="stop")
    assert run.status != 0
    assert load.failures == []
    assert [s["color"] for s in fleet.serves()] == ["blue", "green", "green"]
    assert [r["switched"] for r in rows(run)] == [True, False, False]
    assert run.outputs["active-color"] == ""
    assert "the fleet is split" in run.summary


def test_a_fleet_wide_rollback(fleet: Fleet) -> None:
    sha = fleet.app.version("v2")
    run, _ = fleet.run(sha, batch_size="100%")
    assert run.status == 0, run.log
    run, load = fleet.run(sha, command="rollback", batch_size="100%")
    assert run.status == 0, run.log
    assert load.failures == []
    served_everywhere(fleet, "green", "v1")
    assert [r["active-color"] for r in rows(run)] == ["green"] * 3


@pytest.mark.parametrize("fleet", [("v2", 2)], indirect=True, ids=["v2"])
def test_through_a_jump_host_to_hosts_reachable_only_through_it(fleet: Fleet) -> None:
    """The targets are named as the lab network knows them (web-1, web-2): no name the runner can
    resolve, no published sshd used; only the bastion's sshd is reached from the runner."""
    behind = [hosts.Host(h.name, h.container, 0, h.web_port, h.host_key) for h in fleet.hosts]
    sha = fleet.app.version("v2")
    inputs = hosts.fleet_inputs(
        behind,
        fleet.app,
        sha,
        fleet.key,
        proxy_jump=f"{lab.DEPLOY_USER}@127.0.0.1:{fleet.bastion.ssh_port}",
        proxy_key=fleet.jump_key,
        proxy_known_hosts=fleet.bastion.known_hosts_line(),
    )
    direct = lab.run_action({**inputs, "proxy-jump": "", "proxy-key": "", "proxy-known-hosts": ""})
    # not without the bastion: the first host that cannot be reached stops the other (either may be first)
    assert direct.status != 0 and re.search(r"cannot reach web-[12]:22", direct.stdout), direct.stdout
    with Load(fleet.lb.url("/")) as load:
        run = lab.run_action(inputs, timeout=900)
    assert run.status == 0, run.log
    assert load.failures == []
    served_everywhere(fleet, "blue", "v2")
    lab.assert_no_secrets(run, inputs)


def blue_containers(host: hosts.Host, *, running_only: bool = False) -> list[str]:
    which = [] if running_only else ["--all"]
    selector = "label=com.docker.compose.service=backend_blue"
    return host.exec("docker", "ps", *which, "--quiet", "--filter", selector).split()


def test_a_cancel_in_the_middle_of_a_fleet_puts_every_host_back(fleet: Fleet) -> None:
    """The runner's cancel once web-1 has switched and the rest have not all switched: web-1 switches
    back (rollback-all), the others stop where they are; every host serves green v1 again, no blue
    container is left anywhere, and no request through the load balancer fails."""
    sha = fleet.app.version("v2")
    with Load(fleet.lb.url("/")) as load:
        running = lab.RunningAction(fleet.inputs(sha))
        running.wait_for_line(f"[{fleet.hosts[0].address}] Switch nginx to blue: ok", 300)
        running.cancel_like_the_runner()
        run = running.wait()
    assert run.status != 0
    assert load.failures == []
    served_everywhere(fleet, "green", "v1")
    assert [blue_containers(h) for h in fleet.hosts] == [[], [], []]
    assert "the run was cancelled" in run.summary
    assert rows(run)[0]["rolled-back"] is True


@pytest.mark.parametrize("fleet", [("v2", 2)], indirect=True, ids=["v2"])
def test_a_first_deploy_host_the_fleet_switches_back_stops_its_nginx_again(fleet: Fleet) -> None:
    """web-1 runs nothing yet (its nginx was never started: a first deploy); web-2 serves green and its
    new color fails through its nginx. web-1 switches first, starting its nginx on blue; web-2's
    failure sends it back: its nginx is stopped again, blue removed, as before the run."""
    first, second = fleet.hosts
    compose = [*first.compose(), "--project-name", fleet.app.name, "-f", fleet.app.stack_file("base")]
    first.deploy(*compose, "rm", "--stop", "--force", "nginx", cwd=str(fleet.app.app_dir))
    first.deploy("rm", f"{fleet.app.app_dir}/.active_env")
    hosts.set_dotenv(second, fleet.app, "LAB_PROXIED_STATUS=502\n")
    sha = fleet.app.version("v2")
    run = lab.run_action(fleet.inputs(sha), timeout=900)
    assert run.status != 0
    assert re.search(rf"\[{re.escape(first.address)}\] Switch nginx to blue: ok in \S+ \(nginx started", run.stdout)
    one, two = rows(run)
    assert one["rolled-back"] is True and one["switched"] is False and two["active-color"] == "green"
    assert any(
        f"so {first.address} switched back: the nginx this first deploy started is stopped again" in e
        for e in run.commands("error")
    ), run.commands("error")
    nginx = first.exec(
        "docker", "ps", "--all", "--format", "{{.State}}", "--filter", f"name={fleet.app.nginx_container}"
    )
    assert nginx.split() in ([], ["exited"]), nginx
    assert blue_containers(first) == [] and blue_containers(second) == []
    assert hosts.served(second) == {**hosts.served(second), "color": "green", "version": "v1"}


@pytest.mark.parametrize("fleet", [("v2", 2)], indirect=True, ids=["v2"])
def test_a_host_that_cannot_switch_back_says_so_and_keeps_serving(fleet: Fleet) -> None:
    """web-1 has switched when web-2 fails; by then web-1's nginx rejects any config (a broken file in
    its conf.d), so its switch back fails: it says it could not switch back and still serves blue,
    under a 'Switch back failed' annotation, and the headline says the fleet is split. A
    pre-switch-command waits for /tmp/go in each host's new backend, so each switch comes when the
    test says."""
    first, second = fleet.hosts
    hosts.set_dotenv(second, fleet.app, "LAB_PROXIED_STATUS=502\n")
    sha = fleet.app.version("v2")
    gate = "backend_{color} sh -c 'while [ ! -e /tmp/go ]; do sleep 0.1; done'"
    broken = f"{fleet.app.app_dir}/nginx/conf.d/zz-broken.conf"

    def release(host: hosts.Host) -> None:
        lab.wait_for(lambda: bool(blue_containers(host, running_only=True)), f"{host.name}'s blue backend", 300)
        host.exec("docker", "exec", blue_containers(host, running_only=True)[0], "touch", "/tmp/go")

    with Load(fleet.lb.url("/")) as load:
        running = lab.RunningAction(fleet.inputs(sha, pre_switch_command=gate))
        release(first)
        running.wait_for_line(f"[{first.address}] Switch nginx to blue: ok", 300)
        first.exec("sh", "-c", f"echo 'not nginx' > {broken}", user=lab.DEPLOY_USER)
        release(second)
        run = running.wait(900)
    first.exec("rm", "-f", broken)
    assert run.status != 0
    assert load.failures == []
    assert [s["color"] for s in fleet.serves()] == ["blue", "green"]
    (failed_back,) = [e for e in run.commands("error") if "Switch back failed" in e]
    assert f"{first.address} could not switch back (" in failed_back and "it still serves blue" in failed_back
    assert "switched back" not in failed_back
    assert "the fleet is split" in run.summary
    one, _ = rows(run)
    assert one["switched"] is True and one["active-color"] == "blue"


def test_behind_a_keepalive_load_balancer_the_hosts_leave_it_around_each_reload(fleet: Fleet) -> None:
    """A load balancer that keeps connections to the hosts open (and retries nothing): a reload closes
    the old workers' idle connections, racing its requests. With lb-detach-command and
    lb-attach-command each host leaves the load balancer before its reload and comes back once
    confirmed, one at a time: a rolling deploy of three hosts under load has no failed request. The
    load balancer is 20 ms from the hosts, as across a network, so the race is real here: without the
    hooks this test fails (bench/keepalive.py: 98 of 480 requests failed per deploy; with them, 0)."""
    balancer = hosts.start_keepalive_load_balancer(fleet.hosts)
    try:
        sha = fleet.app.version("v2")
        inputs = fleet.inputs(sha, lb_detach_command=hosts.LB_DETACH, lb_attach_command=hosts.LB_ATTACH)
        with Load(balancer.url("/api/v1/"), clients=6) as load:
            run = lab.run_action(inputs, timeout=900)
        assert run.status == 0, run.log
        assert load.failures == [] and len(load.statuses) > 200
        served_everywhere(fleet, "blue", "v2")
        log = balancer.log()
        order = [line for line in log.splitlines() if line.startswith(("detached ", "attached "))]
        assert order == [f"{verb} {h.name}" for h in fleet.hosts for verb in ("detached", "attached")], log
        assert "out of the load balancer for" in run.stdout
    finally:
        balancer.stop()


def test_a_canary_judges_the_first_batch_on_the_sum_of_its_hosts_counts(fleet: Fleet) -> None:
    """batch-size 2 of 3: web-1 and web-2 run each step together. web-2's copy of v2 fails every 2nd
    request to one endpoint, web-1's does not: the sum aborts both, and web-3 never switches. Fixed,
    the same canary promotes web-1 and web-2, and web-3 then switches directly. (The batch gets 2/3
    of the balancer's requests and the canary a tenth of those: enough clients for a verdict at 10%.)"""
    canary = {"strategy": "canary", "canary_hold": "2", "canary_min_requests": "10", "batch_size": "2"}
    hosts.set_dotenv(fleet.hosts[1], fleet.app, "LAB_FLAKY=/api/v1/orders 2\n")
    sha = fleet.app.version("v2")
    with Load(fleet.lb.url("/api/v1/")) as fine, Load(fleet.lb.url("/api/v1/orders"), clients=3) as orders:
        run = lab.run_action(fleet.inputs(sha, **canary), timeout=900)
    assert run.status != 0
    served_everywhere(fleet, "green", "v1")
    assert fine.failures == [] and 0 < len(orders.failures) < 0.1 * len(orders.statuses)
    errors = [e.replace("%25", "%") for e in run.commands("error")]
    assert any("the canary at 10% failed: the new color answered" in e for e in errors), errors
    # the same verdict on both, web-1's own counts clean: their sum was judged
    steps = [
        json.loads(h.exec("cat", f"{fleet.app.app_dir}/.bluegreen/journal.jsonl").splitlines()[-1]) for h in fleet.hosts
    ]
    assert steps[0]["canary"] == steps[1]["canary"] and "canary" not in steps[2]
    assert "Switch nginx to blue" not in run.stdout

    hosts.set_dotenv(fleet.hosts[1], fleet.app, "")
    run, load = fleet.run(sha, clients=4, **canary)
    assert run.status == 0, run.log
    assert load.failures == []
    served_everywhere(fleet, "blue", "v2")
    log = run.stdout
    assert all(f"[{h.address}] Canary blue: 10% → 50%: ok" in log for h in fleet.hosts[:2])
    assert f"[{fleet.hosts[2].address}] Canary" not in log
