"""Refs as a person means them, the files of a commit, and what a checkout must not overwrite."""

from __future__ import annotations

import asyncio

import pytest

from bluegreen.config import load_config
from bluegreen.errors import DeployError
from bluegreen.sync import Checkout, parents, parse_blobs, ref_names, relative_to

from .fakes import FakeHost, FakeRepo
from .test_config import raw

APP = "/srv/app"
A, B = "a" * 40, "b" * 40


def test_a_ref_means_origins_branch_a_tag_or_a_commit_never_a_local_branch() -> None:
    assert ref_names("main") == [("refs/tags/main", "tag main"), ("refs/remotes/origin/main", "branch main")]
    assert ref_names("refs/heads/release/1.x") == [("refs/remotes/origin/release/1.x", "branch release/1.x")]
    assert ref_names("refs/tags/v1.2") == [("refs/tags/v1.2", "tag v1.2")]
    assert ref_names(A) == [(A, "commit")]
    assert ref_names("refs/pull/7/head") == []  # fetched as it is
    assert all(not name.startswith("refs/heads/") and name != "main" for name, _ in ref_names("main"))


def test_cat_file_batch_output_is_read_blob_by_blob() -> None:
    body = "services:\n  ünïcode: {}\n"
    output = (
        f"{'f' * 40} blob {len(body.encode())}\n{body}\n{B}:./missing.yml missing\n{'e' * 40} tree 3\nabc\n"
        f"{'d' * 40} blob 0\n\n"
    ).encode()
    names = [f"{A}:./x.yml", f"{B}:./missing.yml", f"{A}:./dir", f"{A}:./empty"]
    assert parse_blobs(output, names) == {names[0]: body, names[1]: None, names[2]: None, names[3]: ""}


def test_folders_above_a_path_and_paths_inside_app_dir() -> None:
    assert parents("a/b/c.yml") == ["a", "a/b"] and parents("c.yml") == []
    assert relative_to(APP, f"{APP}/nginx/conf.d/upstream.conf") == "nginx/conf.d/upstream.conf"
    assert relative_to(APP, "/etc/nginx/conf.d/upstream.conf") == "" and relative_to(APP, "/srv/application/x") == ""


def checkout(
    commits: dict[str, dict[str, str]], head: str, files: dict[str, str] | None = None
) -> tuple[FakeHost, Checkout]:
    host = FakeHost(files=dict(files or {}))
    FakeRepo(host, APP, commits, {"refs/remotes/origin/main": B}, head)
    return host, Checkout(host, load_config(raw()))


def test_a_file_the_commit_lacks_is_read_from_the_work_tree_only_when_asked() -> None:
    _, git = checkout({A: {"c.yml": "services: {}\n"}}, A, {f"{APP}/kept-on-host.yml": "x: 1\n"})
    assert asyncio.run(git.read(A, ["c.yml", "kept-on-host.yml"])) == {
        "c.yml": "services: {}\n",
        "kept-on-host.yml": None,
    }
    on_disk = asyncio.run(git.read(A, ["c.yml", "kept-on-host.yml"], on_disk=True))
    assert on_disk == {"c.yml": "services: {}\n", "kept-on-host.yml": "x: 1\n"}


def test_the_upstream_file_set_aside_for_the_checkout_is_not_in_its_way() -> None:
    host, git = checkout({A: {}, B: {"nginx/conf.d/upstream.conf": "# placeholder\n", "docker/.env": "X=1\n"}}, A)
    host.files[f"{APP}/nginx/conf.d/upstream.conf"] = "upstream backend {}\n"
    asyncio.run(git.check_host_files(B, "nginx/conf.d/upstream.conf"))
    host.files[f"{APP}/docker/.env"] = "X=production\n"
    with pytest.raises(
        DeployError, match=r"would overwrite what the host has and git does not track, in /srv/app: docker/.env"
    ):
        asyncio.run(git.check_host_files(B, "nginx/conf.d/upstream.conf"))


def test_many_paths_in_the_way_are_named_ten_at_a_time() -> None:
    files = {f"p{i:02}": "x" for i in range(14)}
    _, git = checkout({A: {}, B: files}, A, {f"{APP}/{p}": "host" for p in files})
    with pytest.raises(DeployError) as caught:
        asyncio.run(git.check_host_files(B, ""))
    assert "p00, p01" in str(caught.value) and "p09 and 4 more; nothing was changed" in str(caught.value)
