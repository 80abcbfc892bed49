"""The orchestrator on a fake host (tests/unit/fakes.py: a git clone, dockerd with Compose v2, nginx in
a container): what it refuses before anything changes, how refs resolve, and that a cancellation's
recovery runs to its end whatever signals follow."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bluegreen import commands
from bluegreen.cli import host_status
from bluegreen.config import load_config
from bluegreen.deploy import Deployer
from bluegreen.errors import LockLost
from bluegreen.fleet import Fleet, deploy_with_signals
from bluegreen.lock import RunInfo
from bluegreen.remote import Remote, Result
from bluegreen.report import EXIT_FAILED, EXIT_UNRECOVERED, Reporter
from bluegreen.stacks import Container

from .fakes import FakeCanaryLog, FakeDocker, FakeNginx, FakeRemote, FakeRepo
from .test_config import raw

APP = "/srv/app"
TARGET = f"{APP}/nginx/conf.d/upstream.conf"
V1, V2, V3 = ("1" * 40, "2" * 40, "3" * 40)
SEED = {
    "docker-compose.base.yml": "services:\n  db: {image: postgres}\n  nginx: {image: nginx, container_name: web}\n",
    "docker-compose.blue.yml": "services:\n  backend_blue: {build: ./app}\n  frontend_blue: {build: ./app}\n",
    "docker-compose.green.yml": "services:\n  backend_green: {build: ./app}\n  frontend_green: {build: ./app}\n",
    "nginx/upstream.blue.conf": "upstream backend { server backend_blue:8000; }\n",
    "nginx/upstream.green.conf": "upstream backend { server backend_green:8000; }\n",
}


class Collect(Reporter):
    def __init__(self) -> None:
        super().__init__([])
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)


@dataclass
class App:
    host: FakeRemote
    repo: FakeRepo
    docker: FakeDocker
    nginx: FakeNginx
    out: Collect

    def fleet(self, **inputs: str) -> Fleet:
        values = {"project-name": "app", "nginx-container": "web", "health-interval": "1", **inputs}
        return Fleet(load_config(raw(**values)), self.out, RunInfo("org/app", "9", "1", "https://run/9"))

    def run(self, **inputs: str) -> Deployer:
        fleet = self.fleet(**inputs)
        asyncio.run(deploy_with_signals(fleet))
        return fleet.members[0].deployer

    def ids(self, service: str) -> list[str]:
        return [c.id for c in self.docker.containers if c.service == service]

    def mutating(self) -> list[list[str]]:
        """What changed the app: a checkout, compose, or docker stop/rm/start."""
        return [
            argv
            for argv in self.host.calls
            if argv[3:4] == ["checkout"]
            or (argv[:2] == ["docker", "compose"] and argv[2:3] != ["version"])
            or argv[:2] in (["docker", "stop"], ["docker", "rm"], ["docker", "start"])
        ]


def make_app(out: Collect | None = None) -> App:
    """green serves v1 (the seed's layout); origin has v1 and v2 on main (the clone's local main
    still says v1, as a clone's does once the action's detached checkouts take over)."""
    host = FakeRemote()
    commits = {V1: dict(SEED), V2: {**SEED, "app/VERSION": "v2\n"}}
    refs = {"main": V1, "refs/heads/main": V1, "refs/remotes/origin/main": V2}
    repo = FakeRepo(host, APP, commits, refs, V1)
    docker = FakeDocker(host)
    nginx = FakeNginx(host, TARGET)
    host.files[TARGET] = SEED["nginx/upstream.green.conf"]
    for cid, service, image in (("db", "db", "b" * 64), ("ngx", "nginx", "b" * 64), ("g1", "backend_green", "1" * 64)):
        docker.add(Container(cid, f"app-{service}-1", True, "app", service, APP), f"sha256:{image}")
    host.on(["curl"], lambda argv, _: Result(0, "200", ""))
    return App(host, repo, docker, nginx, out or Collect())


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    made = make_app()

    async def connect(config: object) -> FakeRemote:
        return made.host

    monkeypatch.setattr(Remote, "connect", staticmethod(connect))
    yield made


def errors(app: App) -> list[str]:
    return [line for line in app.out.lines if line.startswith("error:")]


def test_a_deploy_builds_the_idle_color_switches_and_keeps_the_old_one_stopped(app: App) -> None:
    deployer = app.run(ref=V2)
    assert deployer.report.ok, app.out.lines
    assert deployer.report.outputs()["active-color"] == "blue" and app.repo.head == V2
    assert {c.service: c.running for c in app.docker.containers} == {
        "db": True,
        "nginx": True,
        "backend_green": False,
        "backend_blue": True,
        "frontend_blue": True,
    }
    assert app.ids("db") == ["db"] and app.ids("nginx") == ["ngx"]  # the base was never touched


def test_a_branch_name_means_origins_branch_as_just_fetched_never_the_clones_own(app: App) -> None:
    deployer = app.run(ref="main")
    assert deployer.report.ok, app.out.lines
    assert deployer.report.sha == V2 and app.repo.head == V2
    assert deployer.report.outputs()["deployed-ref"] == V2
    assert "Sync main: ok" in "\n".join(app.out.lines) and f"branch main at {V2[:12]}" in "\n".join(app.out.lines)


def test_a_name_that_is_a_branch_and_a_tag_at_different_commits_is_refused(app: App) -> None:
    app.repo.refs["refs/tags/main"] = V1
    deployer = app.run(ref="main")
    assert "ref main is ambiguous: tag main is 111111111111, branch main is 222222222222" in deployer.report.error
    assert app.mutating() == []


def test_a_tag_and_a_short_sha_resolve_to_their_commits(app: App) -> None:
    app.repo.refs["refs/tags/v2.0"] = V2
    assert app.run(ref="v2.0").report.sha == V2
    assert app.run(ref=V1[:9]).report.sha == V1


def test_a_checkout_that_would_overwrite_an_untracked_host_file_is_refused_before_anything_changes(
    app: App,
) -> None:
    app.repo.commits[V2][".env"] = "SECRET_KEY=committed-by-mistake\n"
    app.host.files[f"{APP}/.env"] = "SECRET_KEY=production\n"
    deployer = app.run(ref=V2)
    assert "would overwrite what the host has and git does not track, in /srv/app: .env" in deployer.report.error
    assert "git rm --cached" in deployer.report.fix
    assert app.host.files[f"{APP}/.env"] == "SECRET_KEY=production\n"
    assert app.mutating() == [] and app.repo.head == V1


def test_another_app_in_the_same_compose_project_is_refused_by_name_before_anything_changes(app: App) -> None:
    """Staging at /srv/staging/app shares prod's default project name: compose's `up` would recreate
    prod's containers, and `up db` would adopt prod's database."""
    for cid, service in (("pdb", "db"), ("pb", "backend_blue"), ("pc", "cron")):  # cron: not this app's service
        app.docker.add(Container(cid, f"app-{service}-1", True, "app", service, "/srv/prod/app"), "sha256:" + "c" * 64)
    deployer = app.run(ref=V2)
    error = deployer.report.error
    assert "compose project app also holds containers of another app (working directory /srv/prod/app)" in error
    assert "app-backend_blue-1, app-db-1;" in error and "nothing was changed" in error and "cron" not in error
    assert "project-name: srv-app" in deployer.report.fix
    assert app.mutating() == [] and app.repo.head == V1
    assert f"{APP}/.bluegreen/journal.jsonl" not in app.host.files


def test_the_apps_own_containers_started_through_another_symlink_to_app_dir_are_its_own(app: App) -> None:
    """db was started from /home/deploy/app, a symlink to app-dir: compose recorded that path. It is no
    other app's: the deploy goes on, and never touches db."""
    app.docker.containers = [c for c in app.docker.containers if c.service != "db"]
    app.docker.add(Container("db2", "app-db-1", True, "app", "db", "/home/deploy/app"), "sha256:" + "b" * 64)
    app.host.on(["sh", "-c", commands.REAL_PATHS_SCRIPT], lambda argv, _: Result(0, f"{APP}\0", ""))
    deployer = app.run(ref=V2)
    assert deployer.report.ok, app.out.lines
    assert app.ids("db") == ["db2"] and not app.host.ran("docker", "stop", "db2")


def test_a_commit_that_tracks_the_actions_state_folder_is_refused(app: App) -> None:
    app.repo.commits[V2][".bluegreen/journal.jsonl"] = "{}\n"
    deployer = app.run(ref=V2)
    assert f"{V2[:12]} tracks .bluegreen/journal.jsonl" in deployer.report.error
    assert app.mutating() == []


def test_a_color_file_that_defines_a_base_service_is_refused_before_anything_changes(app: App) -> None:
    app.repo.commits[V2]["docker-compose.blue.yml"] += "  db: {image: postgres}\n"
    deployer = app.run(ref=V2)
    assert (
        "docker-compose.blue.yml defines 'db', a service of docker-compose.base.yml: deploying blue would replace "
        "the base's db" in deployer.report.error
    )
    assert app.mutating() == [] and app.ids("db") == ["db"]


def test_a_folder_per_stack_with_one_basename_never_touches_the_base_or_the_live_color(app: App) -> None:
    folders = {
        "deploy/base/compose.yml": SEED["docker-compose.base.yml"],
        "deploy/blue/compose.yml": SEED["docker-compose.blue.yml"].replace("./app", "../../app"),
        "deploy/green/compose.yml": SEED["docker-compose.green.yml"].replace("./app", "../../app"),
        "nginx/upstream.blue.conf": SEED["nginx/upstream.blue.conf"],
        "nginx/upstream.green.conf": SEED["nginx/upstream.green.conf"],
    }
    app.repo.commits[V2] = folders
    inputs = {"compose-file": "deploy/{color}/compose.yml", "base-compose-file": "deploy/base/compose.yml"}
    deployer = app.run(ref=V2, keep_previous="none", **inputs)
    assert deployer.report.ok, app.out.lines
    (up,) = [argv for argv in app.host.ran("docker", "compose") if "up" in argv]
    assert up[up.index("--project-directory") + 1] == f"{APP}/deploy/blue"
    assert app.ids("db") == ["db"] and app.ids("nginx") == ["ngx"]
    assert app.ids("backend_green") == []  # the old color, removed as keep-previous: none says
    assert [c.running for c in app.docker.containers if c.service.endswith("_blue")] == [True, True]


def test_the_runners_second_signal_does_not_cut_the_recovery_short(app: App) -> None:
    """GitHub's cancellation: SIGINT, then SIGTERM 7.5 s later. The recovery here takes longer than
    that (stopping blue takes 9 s); it finishes, and the report says what it restored."""
    app.host.on(["curl"], lambda argv, _: Result(0, "503", ""))  # blue never gets healthy
    app.host.slow(["docker", "stop"], 9)
    fleet = app.fleet(ref=V2, health_timeout="600")
    deployer = fleet.members[0].deployer
    sent: dict[str, float] = {}

    def runner() -> None:
        while not any(s.name == "health" for s in deployer.report.steps):
            time.sleep(0.01)
        for name, sig, grace in (("SIGINT", signal.SIGINT, 7.5), ("SIGTERM", signal.SIGTERM, 0)):
            sent[name] = time.monotonic()
            os.kill(os.getpid(), sig)
            time.sleep(grace)

    thread = threading.Thread(target=runner)
    thread.start()
    ((_, report),) = asyncio.run(deploy_with_signals(fleet)).hosts
    done = time.monotonic()
    thread.join()
    assert done - sent["SIGINT"] > 9 and sent["SIGTERM"] < done  # the SIGTERM came mid-recovery
    assert report.error == "the run was cancelled (SIGINT/SIGTERM)"
    assert report.warnings == ["SIGTERM came while the action was leaving the host consistent; it finished that first"]
    assert report.restored == ["blue containers removed; green keeps serving"]
    assert report.outputs() == {
        "active-color": "green",
        "previous-color": "green",
        "deployed-ref": "",
        "switched": "false",
        "rolled-back": "false",
    }
    assert "Deploy of" in report.summary_markdown() and "failed at Health-check blue" in report.summary_markdown()
    journal = [json.loads(line) for line in app.host.files[f"{APP}/.bluegreen/journal.jsonl"].splitlines()]
    assert journal[-1]["result"] == "failed"
    assert not [c for c in app.docker.containers if c.service.endswith("_blue")]
    assert app.ids("backend_green") == ["g1"] and app.host.files[TARGET] == SEED["nginx/upstream.green.conf"]


def test_each_deploy_prunes_the_images_it_replaced_and_keeps_those_a_container_uses(app: App) -> None:
    """Six deploys, each a new build: the images left are exactly those of the live and the kept
    color's containers, and the base's image, never built by the action, is never touched."""
    shas = []
    for version in range(2, 8):
        sha = f"{version}" * 40
        app.repo.commits[sha] = {**SEED, "app/VERSION": f"v{version}\n"}
        app.repo.refs["refs/remotes/origin/main"] = sha
        deployer = app.run(ref=sha)
        assert deployer.report.ok, app.out.lines
        shas.append(sha)
    in_use = {app.docker.image_of[c.id] for c in app.docker.containers}
    assert app.docker.images == in_use
    assert len({app.docker.image_of[c.id] for c in app.docker.containers if c.service.endswith("_blue")}) == 2
    assert "sha256:" + "b" * 64 in app.docker.images
    assert deployer.report.pruned.startswith("2 images this run replaced")
    assert not [argv for argv in app.host.calls if argv[:3] == ["docker", "image", "rm"] and "--force" in argv]


def test_prune_false_removes_nothing(app: App) -> None:
    for version in range(2, 4):
        sha = f"{version}" * 40
        app.repo.commits[sha] = {**SEED, "app/VERSION": f"v{version}\n"}
        assert app.run(ref=sha, prune="false").report.ok
    assert app.host.ran("docker", "image", "rm") == [] and app.host.ran("docker", "builder") == []


def test_a_color_the_action_adopted_can_be_rolled_back_to_from_the_first_deploy(app: App) -> None:
    """A host the seed's script set up: green serves v1 and the journal knows nothing. The first
    deploy journals green as adopted (its containers, the commit the checkout had), so a rollback
    can go back to it, starting those very containers."""
    first = app.run(ref=V2)
    assert first.report.ok, app.out.lines
    journal = [json.loads(line) for line in app.host.files[f"{APP}/.bluegreen/journal.jsonl"].splitlines()]
    adopted = journal[0]
    assert (adopted["result"], adopted["to"], adopted["ref"], adopted["containers"]) == ("adopted", "green", V1, ["g1"])
    assert adopted["verified"] is False
    back = app.run(command="rollback", ref="")
    assert back.report.ok, app.out.lines
    assert back.report.outputs()["active-color"] == "green" and back.report.outputs()["deployed-ref"] == V1
    assert "the commit the checkout had when the action adopted green; not verified" in back.report.headline()
    assert [c.running for c in app.docker.containers if c.id == "g1"] == [True] and app.repo.head == V1


def test_a_rerun_after_a_kill_once_the_old_color_stopped_records_the_end_the_killed_run_did_not(app: App) -> None:
    """Killed in "Stop green" after docker had already stopped it: blue serves v2, green is kept
    stopped, the journal's last word is `switched`. The rerun has nothing to retire, and records
    the deploy's success, once."""
    assert app.run(ref=V2).report.ok, app.out.lines
    path = f"{APP}/.bluegreen/journal.jsonl"
    lines = app.host.files[path].splitlines()
    assert json.loads(lines[-1])["result"] == "success"
    app.host.files[path] = "\n".join(lines[:-1]) + "\n"  # as the killed run left it
    rerun = app.run(ref=V2)
    assert rerun.report.ok and rerun.report.already_live, app.out.lines
    results = [json.loads(line)["result"] for line in app.host.files[path].splitlines()]
    assert results[-2:] == ["switched", "success"]
    again = app.run(ref=V2)
    assert again.report.already_live
    assert [json.loads(line)["result"] for line in app.host.files[path].splitlines()] == results


def test_a_lost_lock_ends_the_run_where_it_is_and_recovery_changes_nothing(app: App) -> None:
    """The host refused a command (its holder of the lock is gone): another deploy may own the host
    now, so the run neither tears its color down, nor restores, nor journals."""

    def refuse(argv: list[str], _: str | None) -> Result:
        raise LockLost(APP, "the host refused this run's command: its holder of the lock is gone")

    app.host.on(["docker", "compose", "--project-name", "app", "--project-directory", APP], refuse)
    before = len(app.host.calls)
    journal = app.host.files.get(f"{APP}/.bluegreen/journal.jsonl", "")
    deployer = app.run(ref=V2)
    report = deployer.report
    assert report.error.startswith(f"lost the deploy lock on {APP}: the host refused this run's command")
    assert "nothing more was changed" in report.error and "rerun" in report.fix
    assert report.restored == [
        "nothing: this run no longer holds the deploy lock, so it left the host as it was"
        " (it had reached 'Build and start blue')"
    ]
    after = app.host.calls[before:]
    first_refused = next(i for i, argv in enumerate(after) if argv[:2] == ["docker", "compose"] and "build" in argv)
    assert not [a for a in after[first_refused + 1 :] if a[:2] in (["docker", "rm"], ["docker", "stop"])]
    assert app.host.files.get(f"{APP}/.bluegreen/journal.jsonl", "") == journal
    assert app.host.files[TARGET] == SEED["nginx/upstream.green.conf"]
    assert report.exit_code == EXIT_UNRECOVERED  # the host was left as it was: look at it


def test_an_unexpected_error_is_recovered_from_and_shown_as_its_type_never_its_repr(app: App) -> None:
    """A failure no step expects (here the UnicodeEncodeError an env value that is not UTF-8 once
    caused, whose repr holds the whole env file): the run still recovers and journals, and the error
    shows as type and message only."""
    env_file = "DB_PASSWORD=hunter2-s3cret\nKEY=caf\udce9\n"

    def explode(argv: list[str], _: str | None) -> Result:
        if "up" in argv or "build" in argv:
            raise UnicodeEncodeError("utf-8", env_file, 36, 37, "surrogates not allowed")
        return Result(0, "", "")

    app.host.on(["docker", "compose", "--project-name", "app", "--project-directory", APP], explode)
    deployer = app.run(ref=V2)
    report = deployer.report
    assert not report.ok
    assert report.error.startswith("unexpected error: UnicodeEncodeError: 'utf-8' codec can't encode")
    assert "hunter2" not in "\n".join(app.out.lines) and "hunter2" not in report.error
    assert any("blue containers removed; green keeps serving" in r for r in report.restored), report.restored
    assert app.host.files[TARGET] == SEED["nginx/upstream.green.conf"]
    journal = app.host.files[f"{APP}/.bluegreen/journal.jsonl"].splitlines()
    assert json.loads(journal[-1])["result"] == "failed"
    assert report.exit_code == EXIT_FAILED  # failed, and restored


def test_a_lock_lost_mid_switch_says_what_nginx_serves_is_unknown_never_the_old_color(app: App) -> None:
    def refuse(argv: list[str], _: str | None) -> Result:
        raise LockLost(APP, "the runner was silent for 61 s")

    app.host.on(["docker", "exec", "web", "sh", "-c", commands.TEST_AND_RELOAD_SCRIPT], refuse)
    report = app.run(ref=V2).report
    assert report.error.startswith(f"lost the deploy lock on {APP}")
    assert report.outputs()["active-color"] == "" and report.outputs()["switched"] == "false"
    assert "**Serving now:** unknown (nginx may serve blue: the lock was lost during the switch" in (
        report.summary_markdown()
    )
    assert "previous color kept" not in report.summary_markdown()


def test_a_lock_lost_while_undoing_the_switch_says_what_nginx_serves_is_unknown(app: App) -> None:
    """The new upstream was loaded, host-url failed, and the lock was lost while putting the old one
    back: the report cannot say green, and does not."""
    url = "http://127.0.0.1:8080/api/v1/"
    app.host.on(["curl"], lambda argv, _: Result(0, "502" if url in argv else "200", ""))
    reloads: list[int] = []
    test_and_reload = app.nginx.test_and_reload

    def second_loses_the_lock(argv: list[str], stdin: str | None) -> Result:
        reloads.append(1)
        if len(reloads) == 1:
            return test_and_reload(argv, stdin)
        raise LockLost(APP, "the runner was silent for 61 s")

    app.host.on(["docker", "exec", "web", "sh", "-c", commands.TEST_AND_RELOAD_SCRIPT], second_loses_the_lock)
    report = app.run(ref=V2, host_url=url).report
    assert not report.ok and len(reloads) == 2
    assert report.outputs()["active-color"] == ""
    assert "**Serving now:** unknown (nginx may serve blue" in report.summary_markdown()


def journal_results(app: App) -> list[str]:
    text = app.host.files.get(f"{APP}/.bluegreen/journal.jsonl", "")
    return [json.loads(line)["result"] for line in text.splitlines()]


def test_a_rollback_refused_at_its_checkout_changes_nothing_not_even_the_journal(app: App) -> None:
    """v1 tracks .env, which the host keeps as its own: the rollback's checkout is refused before it
    changes anything, so there is nothing to check out back and nothing to journal (exit 1, not 3)."""
    assert app.run(ref=V2).report.ok
    app.repo.commits[V1][".env"] = "X=committed\n"
    app.host.files[f"{APP}/.env"] = "X=production\n"
    before, checkouts = journal_results(app), len(app.repo.checkouts)
    report = app.run(command="rollback", ref="").report
    assert not report.ok and "would overwrite" in report.error and report.exit_code == 1
    assert journal_results(app) == before and len(app.repo.checkouts) == checkouts
    assert app.host.files[f"{APP}/.env"] == "X=production\n"


def test_a_rollback_refused_for_hand_edits_is_no_unfinished_recovery(app: App) -> None:
    assert app.run(ref=V2).report.ok
    app.host.on(["git", "-C", APP, "--no-optional-locks", "status"], lambda argv, _: Result(0, " M app/VERSION\0", ""))
    before = journal_results(app)
    report = app.run(command="rollback", ref="").report
    assert "would discard changes made on the host" in report.error and report.exit_code == 1
    assert journal_results(app) == before


def test_a_rollback_whose_start_fails_partway_stops_what_it_started(app: App) -> None:
    """`docker start` starts g1, then fails (on another container, or cut short by a cancel): g1 is
    stopped again, as if none had started."""
    assert app.run(ref=V2).report.ok

    def start_one(argv: list[str], _: str | None) -> Result:
        app.docker.containers = [
            Container(c.id, c.name, True, c.project, c.service, c.working_dir) if c.id == "g1" else c
            for c in app.docker.containers
        ]
        return Result(1, "", "Error response from daemon: cannot start container g9")

    app.host.on(["docker", "start"], start_one)
    report = app.run(command="rollback", ref="").report
    assert not report.ok and "green's kept containers stopped again" in report.restored
    assert not [c for c in app.docker.containers if c.id == "g1" and c.running]


def test_recovery_never_checks_out_back_over_a_file_the_host_made(app: App) -> None:
    """During a rollback to v1 (which lacks app/VERSION) the host writes its own app/VERSION; the
    health check fails: the checkout back to v2, which tracks that path, is refused, and says so."""
    assert app.run(ref=V2).report.ok

    def unhealthy(argv: list[str], _: str | None) -> Result:
        app.host.files[f"{APP}/app/VERSION"] = "the host's own\n"
        return Result(0, "503", "")

    app.host.on(["curl"], unhealthy)
    report = app.run(command="rollback", ref="", **{"health-timeout": "2"}).report
    assert app.host.files[f"{APP}/app/VERSION"] == "the host's own\n"
    assert any("was not done" in r for r in report.restored) and report.exit_code == 3


def first_reload_fails(app: App) -> list[int]:
    """The next reload's signal fails (nginx untouched), the ones after it work; returns the tries."""
    tries: list[int] = []
    test_and_reload = app.nginx.test_and_reload

    def first_fails(argv: list[str], stdin: str | None) -> Result:
        tries.append(1)
        return Result(4, "", "nginx: [alert] kill(1, 1) failed") if len(tries) == 1 else test_and_reload(argv, stdin)

    app.host.on(["docker", "exec", "web", "sh", "-c", commands.TEST_AND_RELOAD_SCRIPT], first_fails)
    return tries


def test_a_reload_that_fails_reports_how_long_it_may_have_served_from_its_attempt(app: App) -> None:
    first_reload_fails(app)
    report = app.run(ref=V2).report
    assert report.rolled_back and 0 <= report.exposed < 60  # not the machine's uptime


CANARY = {"strategy": "canary", "canary_hold": "1"}
LOG = "/tmp/bluegreen-app-canary.log"


def test_a_canary_promoted_through_its_steps_on_a_fake_host(app: App) -> None:
    """Two steps, each judged on the log's counts, then the switch: the summary's table has both."""
    log = FakeCanaryLog(app.host)
    report = app.run(ref=V2, canary_steps="10,50", **CANARY).report
    assert report.ok and report.outputs()["active-color"] == "blue", app.out.lines
    assert [s.share for s in report.canary] == [10, 50] and log.reads >= 2
    assert all(s.new.responses >= 10 and s.new.errors == 0 and s.verdict == "passed" for s in report.canary)
    assert "| 10% |" in report.summary_markdown()
    assert app.host.files[TARGET] == SEED["nginx/upstream.blue.conf"]  # no split left
    reloads = [i for i, argv in enumerate(app.host.calls) if commands.TEST_AND_RELOAD_SCRIPT in argv]
    log_removed = [i for i, argv in enumerate(app.host.calls) if argv == commands.remove_in_nginx("web", LOG)]
    assert len(reloads) == 3 and log_removed and log_removed[-1] > reloads[-1]  # two splits, the switch; no log left


def test_a_canary_whose_new_color_fails_is_aborted_at_its_first_step(app: App) -> None:
    FakeCanaryLog(app.host, failing="blue", errors=3)
    report = app.run(ref=V2, canary_steps="10,50", **CANARY).report
    assert not report.ok and report.rolled_back and [s.share for s in report.canary] == [10]
    assert "Canary" in report.error or "5xx" in report.error, report.error
    assert app.host.files[TARGET] == SEED["nginx/upstream.green.conf"]
    assert not any(c.running for c in app.docker.containers if c.service.endswith("_blue"))


def test_a_held_canary_is_promoted_and_another_aborted(app: App) -> None:
    FakeCanaryLog(app.host)
    held = app.run(ref=V2, canary_steps="10,hold", **CANARY).report
    assert held.ok and held.held == 10 and held.outputs()["deployed-ref"] == "", app.out.lines
    split = app.host.files[TARGET]
    assert "backend_blue" in split and "backend_green" in split and f"{APP}/.bluegreen/canary-held" in app.host.files
    rerun = app.run(ref=V2).report  # the holding run again: done already
    assert rerun.ok and rerun.held == 10 and app.host.files[TARGET] == split
    refused = app.run(ref=V1).report  # another deploy would replace the held canary unjudged
    assert not refused.ok and "command: promote" in refused.fix and app.host.files[TARGET] == split
    promoted = app.run(command="promote", ref="").report
    assert promoted.ok and promoted.outputs()["active-color"] == "blue", app.out.lines
    assert app.host.files[TARGET] == SEED["nginx/upstream.blue.conf"]
    assert f"{APP}/.bluegreen/canary-held" not in app.host.files

    assert app.run(ref=V1, canary_steps="10,hold", **CANARY).report.held == 10  # green now gets 10%
    aborted = app.run(command="abort", ref="").report
    assert aborted.ok and aborted.rolled_back and aborted.outputs()["active-color"] == "blue", app.out.lines
    assert app.host.files[TARGET] == SEED["nginx/upstream.blue.conf"]
    assert not any(c.running for c in app.docker.containers if c.service.endswith("_green"))
    assert f"{APP}/.bluegreen/canary-held" not in app.host.files


def test_a_failed_abort_or_promote_says_the_canary_is_still_held_and_only_then(app: App) -> None:
    """An abort whose reload fails puts the held split back: the summary says the canary is still
    held; a promote with nothing held says nothing of the kind."""
    FakeCanaryLog(app.host)
    assert app.run(ref=V2, canary_steps="10,hold", **CANARY).report.held == 10
    split = app.host.files[TARGET]
    tries = first_reload_fails(app)
    failed = app.run(command="abort", ref="").report
    assert not failed.ok and app.host.files[TARGET] == split and len(tries) == 2
    assert "nginx upstream switched back to the canary held at 10% on blue" in "\n".join(failed.restored)
    assert "**Serving now:** green (the canary still held)" in failed.summary_markdown()
    assert app.run(command="abort", ref="").report.ok  # still held: a second abort finishes it

    nothing = app.run(command="promote", ref="").report
    assert not nothing.ok and "no canary is held" in nothing.error
    assert "still held" not in nothing.summary_markdown()


def test_an_abort_that_fails_after_its_way_back_keeps_it_and_a_rerun_finishes_it(app: App) -> None:
    """The way back to green is committed, then removing blue fails: nginx keeps serving green (never
    the split again), and the record stays: a promote is refused and keeps it, and the rerun of the
    abort loads green's upstream again (whatever nginx serves by then) and removes blue."""
    FakeCanaryLog(app.host)
    assert app.run(ref=V2, canary_steps="10,hold", **CANARY).report.held == 10
    stops = app.host.ran("docker", "stop")
    app.host.on(["docker", "stop"], lambda argv, _: Result(1, "", "Error response from daemon: busy"))
    failed = app.run(command="abort", ref="").report
    assert not failed.ok and failed.failed_step == "Stop and remove blue", app.out.lines
    assert app.host.files[TARGET] == SEED["nginx/upstream.green.conf"]
    assert "still held" not in failed.summary_markdown() and f"{APP}/.bluegreen/canary-held" in app.host.files
    app.host.handlers.pop(0)  # docker stop works again
    promote = app.run(command="promote", ref="").report
    assert not promote.ok and "command: abort" in promote.fix and f"{APP}/.bluegreen/canary-held" in app.host.files
    assert any(c.running for c in app.docker.containers if c.service.endswith("_blue"))
    rerun = app.run(command="abort", ref="").report
    assert rerun.ok and rerun.outputs()["deployed-ref"] == "", app.out.lines
    assert app.host.files[TARGET] == SEED["nginx/upstream.green.conf"]
    assert not any(c.service.endswith("_blue") for c in app.docker.containers)
    assert f"{APP}/.bluegreen/canary-held" not in app.host.files and len(app.host.ran("docker", "stop")) > len(stops)
    again = app.run(command="abort", ref="").report  # a fleet's rerun, where another host's abort failed
    assert again.ok and again.headline().startswith(
        f"### ✅ The canary of `{V2[:12]}` was aborted on this host already"
    )


def test_an_abort_after_the_split_was_edited_by_hand_still_loads_the_old_upstream(app: App) -> None:
    FakeCanaryLog(app.host)
    assert app.run(ref=V2, canary_steps="10,hold", **CANARY).report.held == 10
    split = app.host.files[TARGET]
    app.host.files[TARGET] = split.replace("weight=9", "weight=5")  # and reloaded by hand
    assert app.host.files[TARGET] != split
    report = app.run(command="abort", ref="").report
    assert report.ok, app.out.lines
    assert app.host.files[TARGET] == SEED["nginx/upstream.green.conf"]
    assert not any(c.service.endswith("_blue") for c in app.docker.containers)


def test_status_shows_a_held_canary_and_an_abort_that_did_not_finish(app: App) -> None:
    FakeCanaryLog(app.host)
    assert app.run(ref=V2, canary_steps="10,hold", **CANARY).report.held == 10
    cfg = load_config(raw(project_name="app", nginx_container="web"), for_deploy=False)
    status = asyncio.run(host_status(cfg))
    assert status["live-color"] == "green" and status["canary"] == {
        "held": "10%",
        "from": "green",
        "to": "blue",
        "ref": V2,
        "since": json.loads(app.host.files[f"{APP}/.bluegreen/canary-held"])["since"],
    }
    app.host.files[TARGET] = SEED["nginx/upstream.green.conf"]  # an abort that died after its way back
    status = asyncio.run(host_status(cfg))
    assert status["live-color"] == "green"
    assert status["canary"] == {
        "unfinished": f"nginx no longer serves the split of {V2}: finish it with command: abort"
    }
