"""build: runner's runner side (shipping.py), without docker: what is built from a compose file's
build:, the workspace's commit (real git), docker save's archive (both layouts, a layer saved twice),
and the registry each host pulls from, spoken to over a real socket."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen.errors import DeployError
from bluegreen.shipping import REGISTRY_USER, Registry, Saved, build_specs, interpolate, read_saved, workspace_commit

ENV = {"TAG": "abc", "EMPTY": "", "NODE_ENV": "production"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app:${TAG}", "app:abc"),
        ("app:$TAG", "app:abc"),
        ("${MISSING-x}/${EMPTY-x}", "x/"),
        ("${MISSING:-x}/${EMPTY:-x}", "x/x"),
        ("${TAG+set}/${MISSING+set}/${EMPTY:+set}", "set//"),
        ("$$TAG", "$TAG"),
    ],
)
def test_variables_are_filled_in_as_compose_fills_them(text: str, expected: str) -> None:
    assert interpolate(text, ENV) == expected


def test_a_required_variable_that_is_not_set_is_refused() -> None:
    with pytest.raises(DeployError, match="MISSING is not set"):
        interpolate("${MISSING?give the tag}", ENV, "compose.yml")


def specs(tmp_path: Path, build: str, env: dict[str, str] | None = None) -> dict[str, object]:
    (tmp_path / "app").mkdir(exist_ok=True)
    text = f"services:\n  web:\n    build:\n{build}\n"
    found, _ = build_specs(text, tmp_path, ["web"], env if env is not None else ENV, "compose.yml", tmp_path)
    return vars(found["web"])


def test_a_build_is_read_as_compose_reads_it_every_value_as_its_text(tmp_path: Path) -> None:
    spec = specs(
        tmp_path,
        "      context: ./app\n      dockerfile: Dockerfile.${TAG}\n      target: prod\n"
        "      args:\n        DEBUG: false\n        VERSION: 1.10\n        NODE_ENV:\n        UNSET:\n",
    )
    assert spec == {
        "context": (tmp_path / "app").resolve(),
        "dockerfile": "Dockerfile.abc",
        "args": (("DEBUG", "false"), ("NODE_ENV", "production"), ("VERSION", "1.10")),
        "target": "prod",
    }


def test_args_as_a_list_take_a_bare_name_from_env_or_leave_it_to_the_dockerfile(tmp_path: Path) -> None:
    spec = specs(tmp_path, "      context: app\n      args: [NODE_ENV, UNSET, A=1]\n")
    assert spec["args"] == (("A", "1"), ("NODE_ENV", "production"))


@pytest.mark.parametrize(
    ("build", "refusal"),
    [
        ("      context: ../..\n", "reaches outside the workspace"),
        ("      context: /\n", "reaches outside the workspace"),
        ("      context: app\n      dockerfile: ../../../etc/Dockerfile\n", "reaches outside the workspace"),
        ("      context: https://github.com/acme/app.git\n", "remote context"),
        ("      context: app\n      dockerfile_inline: FROM scratch\n", "dockerfile_inline"),
    ],
)
def test_a_build_the_runner_would_get_wrong_is_refused(tmp_path: Path, build: str, refusal: str) -> None:
    workspace = tmp_path / "work"
    workspace.mkdir()
    with pytest.raises(DeployError, match=refusal):
        specs(workspace, build)


def test_keys_a_runner_build_ignores_are_named(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    text = "services:\n  web:\n    build: {context: app, cache_from: [x], ssh: [default]}\n"
    _, ignored = build_specs(text, tmp_path, ["web"], ENV, "compose.yml", tmp_path)
    assert ignored == ["cache_from", "ssh"]


def git(repo: Path, *argv: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *argv],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_the_workspace_commit_through_a_branch_packed_refs_a_detached_head_and_a_worktree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", "one")
    first = git(repo, "rev-parse", "HEAD")
    assert workspace_commit(repo) == first  # through refs/heads/main
    git(repo, "commit", "--quiet", "--allow-empty", "-m", "two")
    git(repo, "pack-refs", "--all")
    assert workspace_commit(repo) == git(repo, "rev-parse", "HEAD")  # through packed-refs
    git(repo, "checkout", "--quiet", "--detach", first)
    assert workspace_commit(repo) == first
    git(repo, "worktree", "add", "--quiet", "--detach", str(tmp_path / "tree"), "main")
    assert workspace_commit(tmp_path / "tree") == git(repo, "rev-parse", "main")
    assert workspace_commit(tmp_path / "nothing") == ""


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


LAYER_A, LAYER_B = b"layer a" * 100, b"layer b" * 50
CONFIG = json.dumps(
    {
        "os": "linux",
        "architecture": "amd64",
        "rootfs": {"diff_ids": [digest(LAYER_A), digest(LAYER_B), digest(LAYER_A)]},
    }
).encode()


def legacy_save() -> bytes:
    """docker save before Docker 25: a folder per layer; a layer saved twice is a symlink."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        add(tar, "aaa/layer.tar", LAYER_A)
        add(tar, "bbb/layer.tar", LAYER_B)
        link = tarfile.TarInfo("ccc/layer.tar")
        link.type, link.linkname = tarfile.SYMTYPE, "../aaa/layer.tar"
        tar.addfile(link)
        add(tar, "cfg.json", CONFIG)
        manifest = [{"Config": "cfg.json", "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"]}]
        add(tar, "manifest.json", json.dumps(manifest).encode())
    return out.getvalue()


def oci_save() -> bytes:
    """docker save from Docker 25 on: an OCI layout, blobs named by digest, and manifest.json."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        names = {data: f"blobs/sha256/{digest(data).removeprefix('sha256:')}" for data in (LAYER_A, LAYER_B, CONFIG)}
        for data, name in names.items():
            add(tar, name, data)
        add(tar, "index.json", b"{}")
        layers = [names[LAYER_A], names[LAYER_B], names[LAYER_A]]
        add(tar, "manifest.json", json.dumps([{"Config": names[CONFIG], "Layers": layers}]).encode())
    return out.getvalue()


def chunks(data: bytes, size: int = 777) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize("archive", [legacy_save, oci_save], ids=["legacy", "oci"])
def test_docker_saves_archive_becomes_a_manifest_and_its_blobs(tmp_path: Path, archive: object) -> None:
    assert callable(archive)
    saved = read_saved(chunks(archive()), tmp_path / "saved")
    manifest = json.loads(saved.manifest)
    assert saved.image_id == digest(CONFIG) and saved.platform == "linux/amd64"
    assert [layer["digest"] for layer in manifest["layers"]] == [digest(LAYER_A), digest(LAYER_B), digest(LAYER_A)]
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar"}
    assert saved.blobs[digest(LAYER_B)].path.read_bytes() == LAYER_B
    assert saved.size == 2 * len(LAYER_A) + len(LAYER_B)


async def request(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


def get(method: str, path: str, auth: str = "", close: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"Authorization: {auth}"] if auth else []
    lines += ["Connection: close"] if close else []
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_the_registry_serves_only_its_pull_with_the_password_and_only_blobs_of_the_repository(tmp_path: Path) -> None:
    saved = read_saved(chunks(legacy_save()), tmp_path / "saved")
    other = Saved("sha256:" + "0" * 64, b"{}", {}, 0)

    async def go() -> list[bytes]:
        registry = Registry({"bluegreen/app-web:abc": saved, "bluegreen/app-other:abc": other})
        port = await registry.start()
        auth = "Basic " + base64.b64encode(f"{REGISTRY_USER}:{registry.password}".encode()).decode()
        wrong = "Basic " + base64.b64encode(f"{REGISTRY_USER}:guess".encode()).decode()
        layer = digest(LAYER_B)
        pipelined = get("GET", f"/v2/bluegreen/app-web/blobs/{layer}", auth, close=False) + get("GET", "/v2/", auth)
        try:
            return [
                await request(port, get("GET", "/v2/")),
                await request(port, get("GET", "/v2/", wrong)),
                await request(port, get("GET", "/v2/", auth)),
                await request(port, get("HEAD", "/v2/bluegreen/app-web/manifests/abc", auth)),
                await request(port, get("GET", f"/v2/bluegreen/app-web/manifests/{saved.manifest_digest}", auth)),
                await request(port, get("GET", f"/v2/bluegreen/app-other/blobs/{layer}", auth)),
                await request(port, get("HEAD", f"/v2/bluegreen/app-other/blobs/{layer}", auth)),
                await request(port, pipelined),
                await request(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),  # a TLS hello
            ]
        finally:
            await registry.close()

    anonymous, guessed, ping, head, manifest, elsewhere, head_404, two, tls = asyncio.run(go())
    for refused in (anonymous, guessed):
        assert refused.startswith(b"HTTP/1.1 401") and b'WWW-Authenticate: Basic realm="bluegreen"' in refused
    assert ping.startswith(b"HTTP/1.1 200") and ping.endswith(b"\r\n\r\n{}")
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")  # headers only
    assert f"Docker-Content-Digest: {saved.manifest_digest}".encode() in head
    assert manifest.endswith(saved.manifest)
    assert elsewhere.startswith(b"HTTP/1.1 404")  # a blob of another repository's image is not served
    assert head_404.startswith(b"HTTP/1.1 404") and head_404.endswith(b"\r\n\r\n")
    assert two.count(b"HTTP/1.1 200") == 2 and LAYER_B in two  # keep-alive: two answers on one connection
    assert tls.startswith(b"HTTP/1.1 400")


def test_a_build_merged_in_with_a_yaml_anchor_is_the_one_built(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    text = (
        "x-common: &common\n  build: {context: app, args: {DEBUG: false, EMPTY: ''}}\n"
        "services:\n  web:\n    <<: *common\n"
    )
    found, ignored = build_specs(text, tmp_path, ["web"], ENV, "compose.yml", tmp_path)
    assert found["web"].context == (tmp_path / "app").resolve() and ignored == []
    assert found["web"].args == (("DEBUG", "false"), ("EMPTY", ""))  # an explicit empty value stays empty
