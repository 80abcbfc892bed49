"""The checkout against real git: an origin, a clone as the host has it (its local `main` left where
it was cloned), and the action's git commands run for real through a local stand-in for the SSH
host (the same shell lines, run with sh). Refs as a person means them, files read at a commit
(through a committed symlink too), and what a checkout may and may not overwrite."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from bluegreen import commands
from bluegreen.commands import Holder, shell_line
from bluegreen.config import load_config
from bluegreen.errors import DeployError
from bluegreen.remote import CommandFailed, Holding, Result
from bluegreen.sync import Checkout

from .test_config import raw


class LocalHost:
    """The host, here: each argv quoted into the line SSH would carry, and run with sh."""

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: int = 120,
        check: bool = True,
        hold_stdin: bool = False,
    ) -> Result:
        done = subprocess.run(
            ["sh", "-c", shell_line(argv, timeout)], input=(input or "").encode(), capture_output=True
        )
        result = Result(
            done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"), done.stdout
        )
        if check and not result.ok:
            raise CommandFailed(argv, result.status, result.stdout, result.stderr)
        return result

    async def start(self, argv: Sequence[str]) -> Holding:
        raise AssertionError("no lock here")

    def tie_to(self, holder: Holder | None, lapse: object = None) -> None:
        pass


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def commit(work: Path, message: str, files: dict[str, str] | None = None, links: dict[str, str] | None = None) -> str:
    for path, text in (files or {}).items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    for path, target in (links or {}).items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).unlink(missing_ok=True)
        (work / path).symlink_to(target)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    git(work, "push", "-q", "origin", "HEAD:main")
    return git(work, "rev-parse", "HEAD")


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path, str]:
    """(the author's work clone, the host's app-dir clone, v1): both at v1."""
    origin, work, app = tmp_path / "origin.git", tmp_path / "work", tmp_path / "app"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(origin)], check=True)
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(work)], check=True)
    git(work, "remote", "add", "origin", str(origin))
    v1 = commit(work, "v1", {"docker-compose.blue.yml": "services: {backend_blue: {}}\n"})
    subprocess.run(["git", "clone", "-q", str(origin), str(app)], check=True)
    subprocess.run(["sh", "-c", commands.STATE_DIR_SCRIPT, "sh", str(app / ".bluegreen")], check=True)  # the lock's
    return work, app, v1


def checkout(app: Path) -> Checkout:
    return Checkout(LocalHost(), load_config(raw(**{"app-dir": str(app)})))


def resolve(git_: Checkout, ref: str) -> tuple[str, str]:
    async def go() -> tuple[str, str]:
        await git_.fetch()
        resolved = await git_.resolve(ref)
        return resolved.sha, resolved.how

    return asyncio.run(go())


def test_a_branch_name_means_origins_branch_never_the_clones_stale_local_one(repos: tuple[Path, Path, str]) -> None:
    work, app, v1 = repos
    v2 = commit(work, "v2", {"VERSION": "2\n"})
    assert git(app, "rev-parse", "main") == v1  # what `git rev-parse main` alone would deploy
    git_ = checkout(app)
    for ref in ("main", "refs/heads/main", "origin/main"):
        assert resolve(git_, ref) == (v2, "branch main")
    assert resolve(git_, v1) == (v1, "commit") and resolve(git_, v1[:9]) == (v1, "commit")


def test_a_tag_means_origins_tag_moved_or_deleted_there_and_an_ambiguous_name_is_refused(
    repos: tuple[Path, Path, str],
) -> None:
    work, app, v1 = repos
    git(work, "tag", "-a", "-m", "release", "release-1")
    git(work, "push", "-q", "origin", "refs/tags/release-1")
    git_ = checkout(app)
    assert resolve(git_, "release-1") == (v1, "tag release-1")  # an annotated tag, peeled to its commit
    v2 = commit(work, "v2", {"VERSION": "2\n"})
    git(work, "tag", "-f", "-a", "-m", "moved", "release-1")
    git(work, "push", "-q", "-f", "origin", "refs/tags/release-1")
    assert resolve(git_, "refs/tags/release-1") == (v2, "tag release-1")
    git(work, "push", "-q", "origin", ":refs/tags/release-1")
    with pytest.raises(DeployError, match="ref release-1 was not found"):
        resolve(git_, "release-1")
    git(work, "tag", "main", v1)
    git(work, "push", "-q", "origin", "refs/tags/main")
    with pytest.raises(DeployError, match="ref main is ambiguous"):
        resolve(git_, "main")


def test_a_sha_on_no_branch_and_a_pull_request_ref_are_fetched_as_they_are(repos: tuple[Path, Path, str]) -> None:
    work, app, _ = repos
    git(work, "checkout", "-q", "-b", "feature")
    feature = commit(work, "feature", {"F": "1\n"})
    git(work, "push", "-q", "origin", f"{feature}:refs/pull/7/head")  # on no branch of origin
    git_ = checkout(app)
    assert resolve(git_, "refs/pull/7/head") == (feature, "ref refs/pull/7/head")
    assert resolve(git_, feature) == (feature, "commit")  # by its SHA: fetched by SHA


def test_files_are_read_at_the_commit_through_a_committed_symlink(repos: tuple[Path, Path, str]) -> None:
    work, app, _ = repos
    v2 = commit(
        work, "v2", {"deploy/blue.yml": "services: {web_blue: {}}\n"}, {"docker-compose.green.yml": "deploy/blue.yml"}
    )
    git_ = checkout(app)
    resolve(git_, "main")
    texts = asyncio.run(git_.read(v2, ["docker-compose.green.yml", "docker-compose.blue.yml", "nope.yml"]))
    assert texts == {
        "docker-compose.green.yml": "services: {web_blue: {}}\n",
        "docker-compose.blue.yml": "services: {backend_blue: {}}\n",
        "nope.yml": None,
    }


def test_a_file_the_checkout_deletes_is_not_read_from_the_work_tree(repos: tuple[Path, Path, str]) -> None:
    """The commit lacks a file the current checkout tracks: it does not exist there, whatever the
    work tree has now. A file the host keeps untracked is read from the work tree."""
    work, app, _ = repos
    (work / "docker-compose.blue.yml").unlink()
    v2 = commit(work, "v2 drops the blue file", {"VERSION": "2\n"})
    (app / "kept-on-host.yml").write_text("services: {}\n")
    git_ = checkout(app)
    resolve(git_, "main")
    texts = asyncio.run(git_.read(v2, ["docker-compose.blue.yml", "kept-on-host.yml"], on_disk=True))
    assert texts == {"docker-compose.blue.yml": None, "kept-on-host.yml": "services: {}\n"}


def test_tracked_paths_may_change_type_but_nothing_git_does_not_track_is_overwritten(
    repos: tuple[Path, Path, str],
) -> None:
    work, app, _ = repos
    commit(work, "the shapes before", {"config": "x=1\n", "static/a.css": "a\n", "docs/readme": "r\n"})
    git(app, "pull", "-q", "origin", "main")
    (work / "config").unlink()
    for path in ("static/a.css", "docs/readme"):
        (work / path).unlink()
        (work / path).parent.rmdir()
    v3 = commit(work, "a file becomes a folder, a folder a file", {"config/app.ini": "x=2\n", "static": "one file\n"})
    git_ = checkout(app)
    resolve(git_, "main")
    asyncio.run(git_.check_host_files(v3, ""))  # git turns tracked paths into other shapes itself
    asyncio.run(git_.checkout(v3))
    assert (app / "config/app.ini").read_text() == "x=2\n" and (app / "static").read_text() == "one file\n"
    (work / "static").unlink()
    commit(work, "static is a folder again", {"static/b.css": "b\n"})
    resolve(git_, "main")
    asyncio.run(git_.checkout(git(work, "rev-parse", "HEAD")))
    (app / "static/host-upload.png").write_text("a user's file")  # untracked, in a folder that becomes a file
    (app / ".env").write_text("SECRET=production\n")
    (work / "static/b.css").unlink()
    (work / "static").rmdir()
    v4 = commit(work, "a .env by mistake, and static a file again", {".env": "SECRET=repo\n", "static": "x\n"})
    resolve(git_, "main")
    with pytest.raises(DeployError) as caught:
        asyncio.run(git_.check_host_files(v4, ""))
    assert ": .env, static/host-upload.png; nothing was changed" in str(caught.value)
    assert (app / ".env").read_text() == "SECRET=production\n" and git(app, "rev-parse", "HEAD") != v4


def hand_edited(work: Path, app: Path) -> str:
    """A host with the hand edits people make: an edited tracked file, an edited file the next commit
    drops, a file added to the index but never committed, and the action's own upstream file."""
    commit(
        work,
        "v1 files",
        {"settings.py": "DEBUG = False\n", "old.py": "x = 1\n", "nginx/conf.d/upstream.conf": "green\n"},
    )
    (work / "old.py").unlink()
    v2 = commit(work, "v2 drops old.py", {"VERSION": "2\n"})
    git(app, "pull", "-q", "origin", "main")
    git(app, "checkout", "-q", "--detach", "HEAD~1")
    (app / "settings.py").write_text("DEBUG = True  # hotfix\n")
    (app / "old.py").write_text("x = 2  # hotfix\n")
    (app / "new file.py").write_text("staged = True\n")
    git(app, "add", "new file.py")
    (app / "nginx/conf.d/upstream.conf").write_text("blue\n")  # the action's own: never counts
    return v2


def keep(git_: Checkout, sha: str) -> str:
    return asyncio.run(git_.keep_changes(sha, {"nginx/conf.d/upstream.conf", ".active_env"}, "https://run/7"))


def test_hand_edits_and_staged_files_are_refused_by_name_and_nothing_changes(repos: tuple[Path, Path, str]) -> None:
    work, app, _ = repos
    v2 = hand_edited(work, app)
    before = git(app, "status", "--porcelain")
    with pytest.raises(DeployError, match="would discard changes made on the host") as refused:
        keep(checkout(app), v2)
    assert "new file.py, old.py, settings.py" in str(refused.value) and "upstream.conf" not in str(refused.value)
    assert "git stash" in refused.value.fix and "host-changes: stash" in refused.value.fix
    assert git(app, "status", "--porcelain") == before and git(app, "stash", "list") == ""
    assert (app / "new file.py").read_text() == "staged = True\n"


def test_stashed_hand_edits_survive_the_checkout_and_untracked_files_stay(repos: tuple[Path, Path, str]) -> None:
    work, app, _ = repos
    v2 = hand_edited(work, app)
    (app / ".env").write_text("SECRET=1\n")  # untracked: not the stash's
    git_ = Checkout(LocalHost(), load_config(raw(**{"app-dir": str(app), "host-changes": "stash"})))
    done = keep(git_, v2)
    assert done.startswith("stashed the host's changes to new file.py, old.py, settings.py as ")
    assert (app / "nginx/conf.d/upstream.conf").read_text() == "blue\n"  # the live upstream is not stashed
    asyncio.run(git_.checkout(v2))
    assert "bluegreen: host changes before" in git(app, "stash", "list")
    assert (app / ".env").read_text() == "SECRET=1\n"
    shown = git(app, "stash", "show", "--include-untracked", "--name-only", "stash@{0}")
    assert set(shown.split("\n")) == {"new file.py", "old.py", "settings.py"}
    assert "DEBUG = True  # hotfix" in git(app, "show", "stash@{0}:settings.py")


def test_discard_is_todays_checkout_and_says_what_it_discarded(repos: tuple[Path, Path, str]) -> None:
    work, app, _ = repos
    v2 = hand_edited(work, app)
    git_ = Checkout(LocalHost(), load_config(raw(**{"app-dir": str(app), "host-changes": "discard"})))
    assert keep(git_, v2) == "discarded the host's changes to new file.py, old.py, settings.py"
    assert git(app, "stash", "list") == ""


def test_a_checkout_cut_short_is_the_actions_own_and_never_taken_for_hand_edits(repos: tuple[Path, Path, str]) -> None:
    """A checkout killed midway (a cancel, a fleet's halt) leaves some files at the new commit with HEAD
    still at the old one. The next run's checkout counts none of those as hand edits; a real edit
    made beside them still is."""
    work, app, v1 = repos
    v2 = commit(work, "v2", {"a.py": "a = 2\n", "b.py": "b = 2\n", "settings.py": "DEBUG = False\n"})
    git(app, "fetch", "-q", "origin")
    git(app, "checkout", "-q", "--detach", v1)
    (app / ".bluegreen/checkout").write_text(v2 + "\n")  # what Checkout.checkout wrote before it was cut
    git(app, "checkout", v2, "--", "a.py", "b.py")  # the part that got done: staged, HEAD still at v1
    assert git(app, "status", "--porcelain", "--untracked-files=no") != ""
    git_ = checkout(app)
    assert keep(git_, v2) == ""
    asyncio.run(git_.checkout(v2))
    assert git(app, "rev-parse", "HEAD") == v2 and not (app / ".bluegreen/checkout").exists()
    (app / ".bluegreen/checkout").write_text(v1 + "\n")  # cut short again, on the way back to v1
    git(app, "rm", "-q", "a.py")  # v1 has no a.py: the part that got done removed it
    (app / "settings.py").write_text("DEBUG = True  # hotfix\n")
    with pytest.raises(DeployError, match="would discard changes made on the host") as refused:
        keep(git_, v1)
    assert "settings.py" in str(refused.value) and "a.py" not in str(refused.value)


def test_a_submodule_the_checkout_never_touches_is_no_hand_edit(repos: tuple[Path, Path, str], tmp_path: Path) -> None:
    work, app, _ = repos
    lib = tmp_path / "lib"
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(lib)], check=True)
    (lib / "x.py").write_text("x = 1\n")
    git(lib, "add", "-A")
    git(lib, "commit", "-q", "-m", "lib")
    git(work, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "lib")
    v2 = commit(work, "v2 with a submodule")
    git(app, "fetch", "-q", "origin")
    git(app, "checkout", "-q", "--detach", v2)
    git(app, "-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init")
    (app / "lib/x.py").write_text("x = 2  # edited inside the submodule\n")
    assert keep(checkout(app), v2) == ""


def test_a_checkout_killed_midway_leaves_files_the_next_checkout_takes_as_its_own(
    repos: tuple[Path, Path, str],
) -> None:
    """What a killed `git checkout --force` leaves: the new commit's new files written but untracked,
    and the file it was rewriting removed, HEAD and the index still at the old commit. The next
    checkout of that commit counts none of it as the host's; a file the host made that the commit
    also tracks, with other content, is still refused."""
    work, app, _ = repos
    commit(work, "z", {"z.txt": "z = 1\n"})
    v2 = commit(work, "v2", {"z.txt": "z = 2\n", "new.txt": "new\n", "sub/n.txt": "nested\n", ".env.example": "A=1\n"})
    git(app, "fetch", "-q", "origin")
    git(app, "checkout", "-q", "--detach", "origin/main~1")
    (app / ".bluegreen/checkout").write_text(v2 + "\n")
    (app / "new.txt").write_text("new\n")  # written, not yet in the index
    (app / "sub").mkdir()
    (app / "sub/n.txt").write_text("nested\n")
    (app / "z.txt").unlink()  # being rewritten when the kill came
    git_ = checkout(app)
    asyncio.run(git_.check_host_files(v2, ""))
    assert keep(git_, v2) == ""
    (app / ".env.example").write_text("A=production\n")  # the host's own: not what the commit has
    with pytest.raises(DeployError, match="would overwrite what the host has and git does not track"):
        asyncio.run(git_.check_host_files(v2, ""))
    (app / ".env.example").unlink()
    asyncio.run(git_.checkout(v2))
    assert git(app, "rev-parse", "HEAD") == v2 and git(app, "status", "--porcelain") == ""


def test_a_symlink_a_cut_short_checkout_wrote_is_its_own_and_only_that_link(repos: tuple[Path, Path, str]) -> None:
    """git stores a symlink as its target: a link the killed checkout made counts as its own; a link
    elsewhere, or a file whose text is the link's target, is the host's and is refused."""
    work, app, v1 = repos
    v2 = commit(work, "v2", {"config/prod.env": "A=1\n"}, links={"current.env": "config/prod.env"})
    git(app, "fetch", "-q", "origin")
    (app / ".bluegreen/checkout").write_text(f"{v1} {v2}\n")
    (app / "current.env").symlink_to("config/prod.env")  # written by the checkout, before it was killed
    git_ = checkout(app)
    asyncio.run(git_.check_host_files(v2, ""))
    for host_own in ("config/other.env", None):
        (app / "current.env").unlink()
        if host_own:
            (app / "current.env").symlink_to(host_own)
        else:
            (app / "current.env").write_text("config/prod.env")
        with pytest.raises(DeployError, match="would overwrite what the host has") as refused:
            asyncio.run(git_.check_host_files(v2, ""))
        assert "current.env" in str(refused.value)


def test_a_checkout_failing_at_once_keeps_what_an_earlier_cut_short_one_left_its_own(
    repos: tuple[Path, Path, str],
) -> None:
    """A checkout to v2 cut short, then one to v3 that fails at once (a stale index.lock): the files the
    first wrote are still the action's own at the next run."""
    work, app, v1 = repos
    v2 = commit(work, "v2", {"a.py": "a = 2\n"})
    v3 = commit(work, "v3", {"a.py": "a = 3\n"})
    git(app, "fetch", "-q", "origin")
    (app / ".bluegreen/checkout").write_text(f"{v1} {v2}\n")
    git(app, "checkout", v2, "--", "a.py")  # the part that got done
    (app / ".git/index.lock").write_text("")  # a git killed earlier left it
    git_ = checkout(app)
    with pytest.raises(DeployError, match="git checkout"):
        asyncio.run(git_.checkout(v3))
    assert (app / ".bluegreen/checkout").read_text() == f"{v1} {v2}\n{v1} {v3}\n"
    with pytest.raises(DeployError, match="git checkout"):  # the same failure again adds no line
        asyncio.run(git_.checkout(v3))
    assert (app / ".bluegreen/checkout").read_text().count("\n") == 2
    (app / ".git/index.lock").unlink()
    assert keep(git_, v3) == ""
    asyncio.run(git_.checkout(v3))
    assert git(app, "rev-parse", "HEAD") == v3 and not (app / ".bluegreen/checkout").exists()


def test_a_marker_left_after_its_checkout_ended_hides_no_hand_deletion(repos: tuple[Path, Path, str]) -> None:
    """The run died after git moved HEAD to v2 but before it removed the marker: the whole tree is
    v2's, so a file deleted by hand later is a hand edit, as is an edited one."""
    work, app, v1 = repos
    v2 = commit(work, "v2", {"settings.py": "DEBUG = False\n", "urls.py": "urls = []\n"})
    git(app, "fetch", "-q", "origin")
    git(app, "checkout", "-q", "--detach", v2)
    git_ = checkout(app)
    for left in (f"{v1} {v2}\n", f"{v2}\n"):  # with HEAD then, and as a marker without it
        (app / ".bluegreen/checkout").write_text(left)
        (app / "urls.py").unlink()
        with pytest.raises(DeployError, match="would discard changes made on the host") as refused:
            keep(git_, v2)
        assert "urls.py" in str(refused.value)
        git(app, "checkout", "--", "urls.py")


def test_reading_what_a_cut_short_checkout_wrote_never_rewrites_the_index(repos: tuple[Path, Path, str]) -> None:
    """`git diff` refreshes the index and writes it back (it takes index.lock, whatever
    --no-optional-locks says): a plan, and a concurrent checkout, must never see that."""
    work, app, v1 = repos
    v2 = commit(work, "v2", {"a.py": "a = 2\n", "tool.sh": "echo\n"})
    git(app, "fetch", "-q", "origin")
    (app / ".bluegreen/checkout").write_text(f"{v1} {v2}\n")
    git(app, "checkout", v2, "--", "a.py")
    later = time.time() + 5
    os.utime(app / "docker-compose.blue.yml", (later, later))  # stat-dirty, same content: a refresh writes it
    index = (app / ".git/index").stat().st_mtime_ns
    git_ = checkout(app)
    assert keep(git_, v2) == ""
    assert (app / ".git/index").stat().st_mtime_ns == index
