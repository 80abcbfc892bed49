"""Rollback planning from the journal and the host, against a fake host: what it goes back to, and
every refusal, each changing nothing."""

from __future__ import annotations

import asyncio

import pytest

from bluegreen import rollback
from bluegreen.config import Color, load_config
from bluegreen.errors import DeployError
from bluegreen.journal import Entry
from bluegreen.stacks import ComposeFile, Container, Stack, Stacks

from .fakes import FakeDocker, FakeHost
from .test_config import raw

A, B = "a" * 40, "b" * 40
FILES: dict[Stack, ComposeFile] = {
    "base": ComposeFile(("db",)),
    "blue": ComposeFile(("backend_blue",)),
    "green": ComposeFile(("backend_green",)),
}


def journal(*entries: tuple[str, str, str, list[str]]) -> list[Entry]:
    return [
        {"ref": ref, "to": to, "from": "green" if to == "blue" else "blue", "result": "success", "keep": keep,
         "containers": ids, "command": "deploy", "run": ""}
        for ref, to, keep, ids in entries
    ]  # fmt: skip


def plan(entries: list[Entry], containers: list[Container], live: Color = "green") -> rollback.Plan:
    host = FakeHost()
    docker = FakeDocker(host)
    docker.containers = containers
    stacks = Stacks(host, load_config(raw(**{"project-name": "app"})), lambda _: None)
    loaded: list[str] = []

    async def use_commit(sha: str) -> None:
        loaded.append(sha)
        stacks.use_files(FILES)

    made = asyncio.run(rollback.plan(entries, live, "", stacks, use_commit))
    assert loaded == [made.sha]
    return made


def kept(cid: str, service: str, running: bool = False) -> Container:
    return Container(cid, f"app-{service}-1", running, "app", service, "/srv/app")


def test_a_rollback_goes_back_to_the_kept_containers_that_served_the_other_color() -> None:
    entries = journal((A, "blue", "stopped", ["b1"]), (B, "green", "stopped", ["g1"]))
    made = plan(entries, [kept("b1", "backend_blue"), kept("g1", "backend_green", True), kept("d", "db", True)])
    assert (made.target, made.sha, [c.id for c in made.containers], made.back) == ("blue", A, ["b1"], B)


@pytest.mark.parametrize(
    ("entries", "containers", "message"),
    [
        (journal((B, "green", "stopped", ["g1"])), [], "the journal has no deploy that switched to blue"),
        (journal((A, "blue", "stopped", ["b1"]), (B, "green", "none", ["g1"])), [],
         f"blue's containers from {A[:12]} are gone: the deploy of {B[:12]} removed them (keep-previous: none)"),
        (journal((A, "blue", "stopped", ["b1"])), [kept("b2", "backend_blue")],
         "blue's containers are not the ones that served"),
    ],
)  # fmt: skip
def test_nothing_to_roll_back_to_says_why(entries: list[Entry], containers: list[Container], message: str) -> None:
    with pytest.raises(DeployError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan(entries, containers)


def test_no_serving_color_or_no_nginx_is_nothing_to_roll_back() -> None:
    with pytest.raises(DeployError, match=r"nginx \(web\) is not running"):
        rollback.choose([], "green", "web")
    with pytest.raises(DeployError, match="nginx serves neither color"):
        rollback.choose([], None, "")


def test_a_rerun_of_the_same_rollback_job_is_recognised_by_its_run() -> None:
    entries: list[Entry] = [
        {"ref": A, "to": "blue", "result": "switched", "command": "rollback", "run": "https://run/1"}
    ]
    assert rollback.rerun_of_a_rollback(entries, "https://run/1", "blue") == entries[0]
    assert rollback.rerun_of_a_rollback(entries, "https://run/2", "blue") is None
    assert rollback.rerun_of_a_rollback(entries, "", "blue") is None
    assert rollback.rerun_of_a_rollback(entries, "https://run/1", "green") is None
