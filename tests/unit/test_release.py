"""The release workflow (.github/workflows/release.yml, see docs/releasing.md) keeps its promises: a
hand-started run of a checked version, gated by the full test suite, a multi-arch image that the
release tag's action.yml runs pinned by digest, a version tag never rewritten (only the major tag is
moved), no input spliced into a script, PyPI by trusted publishing. Its scripts run for real here,
with git against a local bare origin. And the files a release ships agree: requirements.txt pins
inside pyproject.toml's ranges, LICENSE, CHANGELOG.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW: dict[Any, Any] = yaml.safe_load((ROOT / ".github/workflows/release.yml").read_text())
JOBS: dict[str, dict[str, Any]] = WORKFLOW["jobs"]
IMAGE = "ghcr.io/bluegreen-action/bluegreen-action"
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
CHANGELOG = (ROOT / "CHANGELOG.md").read_text()
DIGEST = "sha256:" + "0123456789abcdef" * 4


def needs(job: str) -> list[str]:
    declared = JOBS[job].get("needs", [])
    return [declared] if isinstance(declared, str) else list(declared)


def step(job: str, name_start: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in JOBS[job]["steps"] if s.get("name", "").startswith(name_start)]
    assert len(found) == 1, (job, name_start)
    return found[0]


def uses(job: str, action: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in JOBS[job]["steps"] if s.get("uses", "").startswith(action + "@")]
    assert len(found) == 1, (job, action)
    return found[0]


def scripts() -> list[tuple[str, str]]:
    """Every run: script as (job, script)."""
    return [(job, s["run"]) for job, spec in JOBS.items() for s in spec["steps"] if "run" in s]


def commands() -> list[str]:
    """Every command line of every script, continuation lines joined."""
    lines: list[str] = []
    for _, script in scripts():
        lines += [line.strip() for line in script.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


# --- the workflow, as written ---


def test_a_run_is_started_by_hand_with_a_required_version() -> None:
    triggers = WORKFLOW[True]  # PyYAML reads the key `on` as True
    assert list(triggers) == ["workflow_dispatch"]
    version = triggers["workflow_dispatch"]["inputs"]["version"]
    assert version["required"] is True and version.get("type", "string") == "string"
    # the scripts see the input only as $VERSION, and the first step checks its form
    assert WORKFLOW["env"]["VERSION"] == "${{ inputs.version }}"
    assert WORKFLOW["env"]["IMAGE"] == IMAGE
    first = JOBS["test"]["steps"][0]["run"]
    assert r"^[0-9]+\.[0-9]+\.[0-9]+$" in first


def test_every_job_but_test_needs_test() -> None:
    assert needs("test") == []
    for job in JOBS:
        if job == "test":
            continue
        seen: set[str] = set()
        todo = needs(job)
        while todo:
            name = todo.pop()
            assert name in JOBS, name
            if name not in seen:
                seen.add(name)
                todo += needs(name)
        assert "test" in seen, job
    assert "sudo scripts/test" in [s.get("run", "").strip() for s in JOBS["test"]["steps"]]
    assert JOBS["test"]["timeout-minutes"] >= 60


def test_the_image_is_built_for_amd64_and_arm64_and_its_digest_is_the_jobs_output() -> None:
    build = uses("image", "docker/build-push-action")
    options = build["with"]
    assert {"linux/amd64", "linux/arm64"} <= {p.strip() for p in options["platforms"].split(",")}
    assert options["push"] is True
    assert options["tags"] == "${{ env.IMAGE }}:${{ inputs.version }}"
    labels = options["labels"]
    for label in ("source", "version", "revision"):
        assert f"org.opencontainers.image.{label}=" in labels
    assert JOBS["image"]["outputs"]["digest"] == "${{ steps." + build["id"] + ".outputs.digest }}"
    assert JOBS["image"]["permissions"] == {"contents": "read", "packages": "write"}
    for action in ("docker/setup-qemu-action", "docker/setup-buildx-action", "docker/login-action"):
        uses("image", action)


def test_the_image_must_be_pullable_by_anyone_before_anything_is_tagged() -> None:
    check = step("image", "Anyone can pull")["run"]
    assert check.index("docker logout ghcr.io") < check.index('imagetools inspect "$IMAGE@$DIGEST"')
    assert "::error" in check and "private by default" in check and "Change visibility" in check
    assert step("image", "Anyone can pull")["env"]["DIGEST"] == "${{ steps.build.outputs.digest }}"


def test_action_yml_is_pinned_by_the_image_jobs_digest() -> None:
    pin = step("tag", "Commit action.yml pinned")
    assert pin["env"]["DIGEST"] == "${{ needs.image.outputs.digest }}"
    assert 'pinned="docker://$IMAGE@$DIGEST"' in pin["run"] and "^sha256:[0-9a-f]{64}$" in pin["run"]
    assert "action.yml" in pin["run"] and "sed -i" in pin["run"]
    assert JOBS["tag"]["permissions"] == {"contents": "write"}


def test_only_the_major_tag_is_ever_forced() -> None:
    pushes = [line for line in commands() if re.search(r"\bgit\s+push\b", line)]
    assert pushes
    for line in pushes:
        assert not re.search(r"\s--(tags|mirror|all|delete)\b", line), line
        assert " origin " in line, f"{line}: push to origin, naming what"
        refspecs = line.split(" origin ", 1)[1].split()
        forced = re.search(r"\s(--force\S*|-f)(\s|$)", line) or any(r.strip("\"'").startswith("+") for r in refspecs)
        if forced:
            assert refspecs == ['"refs/tags/$major"'], line
    tag_moves = [line for line in commands() if re.search(r"\bgit\s+tag\b.*\s(--force|-f)(\s|$)", line)]
    assert tag_moves and all(re.search(r'\s"\$major"\s', line) for line in tag_moves), tag_moves
    assert 'major="v${VERSION%%.*}"' in commands()
    assert 'git push origin "refs/tags/v$VERSION"' in commands()


def test_no_expression_is_spliced_into_a_script() -> None:
    for job, script in scripts():
        assert "${{" not in script, f"{job}: pass the value through env: instead"
        assert "github.event.inputs" not in script and "inputs.version" not in script, job


def test_pypi_gets_the_package_by_trusted_publishing_from_the_tag() -> None:
    job = JOBS["pypi"]
    assert job["permissions"] == {"id-token": "write", "contents": "read"}
    environment = job["environment"]
    assert (environment if isinstance(environment, str) else environment["name"]) == "pypi"
    assert uses("pypi", "actions/checkout")["with"]["ref"] == "refs/tags/v${{ inputs.version }}"
    publish = uses("pypi", "pypa/gh-action-pypi-publish")
    assert publish["uses"].endswith("@release/v1") and not publish.get("with", {}).get("password")
    assert "python -m build" in "\n".join(s.get("run", "") for s in job["steps"])


def test_the_workflow_reads_only_by_default() -> None:
    assert WORKFLOW["permissions"] == {"contents": "read"}
    assert "permissions" not in JOBS["test"]


# --- the workflow's scripts, run ---


def bash(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A run: step as the runner runs it (shell: bash), with the workflow's env."""
    shims = cwd.parent / "bin"
    shims.mkdir(exist_ok=True)
    if not (shims / "python3").exists():
        (shims / "python3").symlink_to(sys.executable)
    full = {
        "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(cwd.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LC_ALL": "C",
        "IMAGE": IMAGE,
        **env,
    }
    argv = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script]
    return subprocess.run(argv, cwd=cwd, env=full, capture_output=True, text=True, timeout=60)


def git(cwd: Path, *argv: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A clone of a bare origin whose one commit holds the files a release reads."""
    origin, work = tmp_path / "origin.git", tmp_path / "work"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    for name in ("pyproject.toml", "CHANGELOG.md", "action.yml"):
        (work / name).write_text((ROOT / name).read_text())
    git(work, "add", ".")
    git(work, "commit", "-q", "-m", "release me")
    git(work, "remote", "add", "origin", str(origin))
    git(work, "push", "-q", "origin", "main")
    return work


def origin_tags(work: Path) -> dict[str, str]:
    """Each tag of origin and the commit it points to."""
    out = git(work, "ls-remote", "--tags", "origin")
    return {
        ref.removeprefix("refs/tags/").removesuffix("^{}"): sha for sha, ref in (ln.split() for ln in out.splitlines())
    }


@pytest.mark.parametrize("version", ["1.2.3", "0.1.0", "10.20.30"])
def test_a_version_like_1_2_3_passes_the_first_check(version: str, tmp_path: Path) -> None:
    assert bash(JOBS["test"]["steps"][0]["run"], tmp_path, VERSION=version).returncode == 0


@pytest.mark.parametrize(
    "version", ["", "v1.2.3", "1.2", "1.2.3-rc1", "1.2.3\n::error::x", "1.2.3; touch pwned", "$(id)"]
)
def test_anything_else_is_refused_without_echoing_it(version: str, tmp_path: Path) -> None:
    done = bash(JOBS["test"]["steps"][0]["run"], tmp_path, VERSION=version)
    assert done.returncode == 1
    assert done.stdout == "::error title=Bad version::The version must be like 1.2.3: digits only, no v.\n"
    assert not (tmp_path / "pwned").exists()


def test_the_preflight_passes_for_this_version_and_refuses_another_or_an_existing_tag(checkout: Path) -> None:
    preflight = step("test", "pyproject.toml and CHANGELOG.md say the version")["run"]
    version = PYPROJECT["project"]["version"]
    assert bash(preflight, checkout, VERSION=version).returncode == 0

    other = bash(preflight, checkout, VERSION="999.0.0")
    assert other.returncode == 1 and f"pyproject.toml says {version}, not 999.0.0" in other.stdout

    git(checkout, "tag", f"v{version}")
    git(checkout, "push", "-q", "origin", f"v{version}")
    exists = bash(preflight, checkout, VERSION=version)
    assert exists.returncode == 1 and f"Tag v{version} already exists" in exists.stdout


def test_the_preflight_refuses_a_version_without_release_notes(checkout: Path) -> None:
    preflight = step("test", "pyproject.toml and CHANGELOG.md say the version")["run"]
    pyproject = checkout / "pyproject.toml"
    pyproject.write_text(re.sub(r'(?m)^version = ".*"$', 'version = "999.0.0"', pyproject.read_text()))
    done = bash(preflight, checkout, VERSION="999.0.0")
    assert done.returncode == 1 and "no (or an empty) section ## 999.0.0" in done.stdout


def test_the_tag_job_pins_the_digest_pushes_a_new_tag_and_moves_only_the_major_one(checkout: Path) -> None:
    dispatched = git(checkout, "rev-parse", "HEAD")
    git(checkout, "tag", "-a", "v1", "-m", "an older v1")
    git(checkout, "push", "-q", "origin", "v1")
    env = {"VERSION": "1.2.3", "DIGEST": DIGEST, "GITHUB_SHA": dispatched}

    assert bash(step("tag", "Commit action.yml pinned")["run"], checkout, **env).returncode == 0
    action = yaml.safe_load(git(checkout, "show", "HEAD:action.yml"))
    assert action["runs"] == {"using": "docker", "image": f"docker://{IMAGE}@{DIGEST}"}
    assert git(checkout, "log", "-1", "--format=%s%n%an") == (
        "Release v1.2.3: run the image pinned by digest\ngithub-actions[bot]"
    )
    assert git(checkout, "rev-parse", "HEAD^") == dispatched
    assert git(checkout, "diff", "--name-only", "HEAD^", "HEAD") == "action.yml"

    push = step("tag", "Push the new tag")["run"]
    assert bash(push, checkout, **env).returncode == 0
    release = git(checkout, "rev-parse", "HEAD")
    assert origin_tags(checkout)["v1.2.3"] == release and origin_tags(checkout)["v1"] == release
    assert git(checkout, "cat-file", "-t", "v1.2.3") == "tag"  # annotated

    # A re-run of the job after the push, in a new checkout of the dispatched commit, keeps the tag
    # it pushed (its new commit is never pushed).
    git(checkout, "checkout", "-q", "--detach", dispatched)
    git(checkout, "tag", "-d", "v1.2.3", "v1")
    assert bash(step("tag", "Commit action.yml pinned")["run"], checkout, **env).returncode == 0
    again = bash(push, checkout, **env)
    assert again.returncode == 0 and "kept as it is" in again.stdout
    assert origin_tags(checkout)["v1.2.3"] == release

    # Another digest (or commit) under that tag is someone else's: refused, the tag left as it is.
    other = bash(push, checkout, **{**env, "DIGEST": "sha256:" + "f" * 64})
    assert other.returncode == 1 and "not this release's" in other.stdout
    assert origin_tags(checkout)["v1.2.3"] == release


def test_the_tag_job_refuses_a_missing_digest(checkout: Path) -> None:
    done = bash(step("tag", "Commit action.yml pinned")["run"], checkout, VERSION="1.2.3", DIGEST="")
    assert done.returncode == 1 and "no digest" in done.stdout
    assert (checkout / "action.yml").read_text() == (ROOT / "action.yml").read_text()


def test_the_release_notes_are_the_versions_changelog_section(checkout: Path) -> None:
    shims = checkout.parent / "bin"
    shims.mkdir()
    (shims / "gh").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > args\ncp "$7" notes\n')
    (shims / "gh").chmod(0o755)
    (checkout / "CHANGELOG.md").write_text(
        "# Changelog\n\n## Unreleased\n\n- next\n\n"
        "## [1.2.3] - 2026-12-24\n\n### Fixed\n\n- a fix\n\n"
        "## 1.2.2\n\n- old\n"
    )
    done = bash(step("tag", "GitHub release")["run"], checkout, VERSION="1.2.3", RUNNER_TEMP=str(checkout))
    assert done.returncode == 0, done.stdout + done.stderr
    args = (checkout / "args").read_text().splitlines()
    assert args == ["release", "create", "v1.2.3", "--title", "v1.2.3", "--notes-file", args[6], "--verify-tag"]
    assert (checkout / "notes").read_text() == "\n### Fixed\n\n- a fix\n\n"

    missing = bash(step("tag", "GitHub release")["run"], checkout, VERSION="9.9.9", RUNNER_TEMP=str(checkout))
    assert missing.returncode == 1 and "no section ## 9.9.9" in missing.stdout


# --- what a release ships ---


def pins() -> dict[str, Version]:
    pinned: dict[str, Version] = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pinned[canonicalize_name(name)] = Version(version)
    return pinned


def test_requirements_txt_pins_every_dependency_inside_pyprojects_range() -> None:
    pinned = pins()
    dependencies = [Requirement(d) for d in PYPROJECT["project"]["dependencies"]]
    assert dependencies
    for requirement in dependencies:
        assert requirement.specifier, f"{requirement}: a range, not any version"
        assert not any(s.operator == "==" for s in requirement.specifier), f"{requirement}: a range, not a pin"
        version = pinned[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), (str(requirement), str(version))
    assert "bcrypt" in pinned  # what asyncssh[bcrypt] brings, pinned for the image


def test_pyproject_says_the_license_authors_and_urls() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == {"text": "MIT"}
    assert project["authors"]
    for name in ("Homepage", "Source", "Changelog"):
        assert project["urls"][name].startswith("https://github.com/bluegreen-action/bluegreen-action")


def test_license_and_changelog() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    assert re.search(r"(?m)^## Unreleased$", CHANGELOG)
    # the version pyproject.toml says has its section: the release notes of its run
    version = PYPROJECT["project"]["version"]
    assert re.search(rf"(?m)^## \[?{re.escape(version)}\]?( |$)", CHANGELOG), version
