"""plan against the fake host of test_deployer: the read-only steps, what a deploy would do, and
not one command that changes the host (no lock, no fetch, no write, no compose)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from bluegreen.config import load_config
from bluegreen.plan import plan_fleet
from bluegreen.remote import Remote, Result

from .test_config import raw
from .test_deployer import APP, V2, App, make_app


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    made = make_app()
    made.host.on(["git", "-C", APP, "ls-remote"], lambda argv, _: Result(0, f"{V2}\trefs/heads/main\n", ""))

    async def connect(config: object) -> object:
        return made.host

    monkeypatch.setattr(Remote, "connect", staticmethod(connect))
    yield made


def plan(app: App, **inputs: str) -> int:
    values = {"project-name": "app", "nginx-container": "web", "health-interval": "1", "plan": "true", **inputs}
    return asyncio.run(plan_fleet(load_config(raw(**values)), app.out))


def test_a_plan_reads_and_says_what_a_deploy_would_do_and_changes_nothing(app: App) -> None:
    files = dict(app.host.files)
    assert plan(app, ref="main") == 0
    text = "\n".join(app.out.lines)
    assert "live: nginx serves green; a deploy builds blue and switches to it" in text
    assert f"ref main: branch main at {V2[:12]}" in text and "nginx: the container web" in text
    assert "build: backend_blue, frontend_blue" in text
    assert "Verdict:** a deploy would switch green → blue" in text
    assert app.host.files == files and app.mutating() == []
    assert not [a for a in app.host.calls if a[:3] == ["git", "-C", APP] and a[3] in ("fetch", "checkout", "stash")]


def test_a_plan_of_a_deploy_that_would_be_refused_says_why_and_exits_1(app: App) -> None:
    assert plan(app, ref="no-such-branch") == 1
    text = "\n".join(app.out.lines)
    assert "A deploy would be refused:** ref no-such-branch was not found in the origin of /srv/app" in text


def test_a_commit_the_clone_lacks_is_planned_from_the_checkout_and_said_unverified(app: App) -> None:
    unknown = "9" * 40
    assert plan(app, ref=unknown) == 0
    text = "\n".join(app.out.lines)
    assert f"ref {unknown}: commit at {unknown[:12]} (not fetched yet" in text
    assert f"Not checked before the deploy: that origin has commit {unknown[:12]}, and the files" in text


def test_a_read_that_fails_on_the_host_ends_the_plan_with_its_cause_never_a_traceback(app: App) -> None:
    app.host.on(["git", "-C", APP, "cat-file"], lambda argv, _: Result(124, "", "timed out"))
    assert plan(app, ref="main") == 1
    assert "A deploy would be refused:** the plan could not finish:" in "\n".join(app.out.lines)
