"""Images built once on the runner and shipped to each host over SSH (`build: runner`).

    runner:  the workspace at the deployed commit? → build each service once (the runner's docker)
             → save it (config and layers, as docker save gives them) → serve it (`Registry`)
    host:    a remote forward of the action's own SSH connection to that registry → docker pull
             127.0.0.1:PORT/...: dockerd asks only for the layers it lacks → tag it as compose names it

Nothing is installed on the host and it reaches nothing but its own loopback: the registry is this
process, read-only, serving what the runner built under names of its own; it lives for one host's
pull, on a port of its own (so the bytes each host was sent are counted). Layers are served as docker
save gives them (uncompressed tars, whose digest is their diff id), so a layer keeps its digest from
one deploy to the next and a host that pulled it once never gets it again. The image's config is
served as it is: each host's image id is the runner's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import posixpath
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import DeployError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
BUILD_KEYS = {"context", "dockerfile", "args", "target"}  # what a runner build honours of `build:`
SHIPPING_HOSTS = 4  # hosts shipped to at once: each pull reads the runner's disk and its uplink
CHUNK = 1 << 20


# -- the workspace --------------------------------------------------------------------------------


def workspace_commit(workspace: Path) -> str:
    """The commit the workspace's git checkout is at (HEAD, through a branch), read from .git
    itself: the action's image has no git. "" if it is no checkout."""
    git = workspace / ".git"
    if git.is_file():  # a worktree or a submodule: "gitdir: <path>"
        pointer = git.read_text().strip().removeprefix("gitdir:").strip()
        git = (workspace / pointer).resolve()
    try:
        head = (git / "HEAD").read_text().strip()
    except OSError:
        return ""
    if not head.startswith("ref: "):
        return head
    ref = head.removeprefix("ref: ")
    common = git
    if (git / "commondir").is_file():
        common = (git / (git / "commondir").read_text().strip()).resolve()
    for folder in (git, common):
        with contextlib.suppress(OSError):
            return (folder / ref).read_text().strip()
    with contextlib.suppress(OSError):
        for line in (common / "packed-refs").read_text().splitlines():
            sha, _, name = line.partition(" ")
            if name == ref:
                return sha
    return ""


# -- what to build --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildSpec:
    """A service's `build:` as the runner builds it."""

    context: Path
    dockerfile: str
    args: tuple[tuple[str, str], ...] = ()
    target: str = ""


_VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))"
)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """${NAME}, ${NAME:-default}, $NAME and $$ as compose fills them in, from the env input."""

    def one(match: re.Match[str]) -> str:
        if match.group("dollar"):
            return "$"
        name = match.group("braced") or match.group("plain")
        value = env.get(name, "")
        return value or (match.group("default") or "")

    return _VARIABLE.sub(one, text)


def build_specs(
    compose_text: str, compose_dir: Path, services: list[str], env: Mapping[str, str], file: str
) -> tuple[dict[str, BuildSpec], list[str]]:
    """The build of each of `services` in a compose file (read from the workspace), and the build
    keys a runner build does not honour (a warning). A context that is a URL is refused."""
    data = yaml.safe_load(compose_text) or {}
    specs, ignored = {}, set()
    for service in services:
        build = ((data.get("services") or {}).get(service) or {}).get("build")
        spec: dict[str, Any] = {"context": build} if isinstance(build, str) else dict(build or {})
        ignored |= set(spec) - BUILD_KEYS
        context = interpolate(str(spec.get("context") or "."), env)
        if "://" in context or context.startswith("git@"):
            raise DeployError(
                f"{file}: the build of {service} has a remote context ({context}), which build: runner cannot use",
                "give it a folder of the repository as its context, or set build: host",
            )
        args = spec.get("args") or {}
        if isinstance(args, list):
            args = dict(str(item).partition("=")[::2] for item in args)
        specs[service] = BuildSpec(
            (compose_dir / context).resolve(),
            interpolate(str(spec.get("dockerfile") or "Dockerfile"), env),
            tuple(sorted((str(k), interpolate("" if v is None else str(v), env)) for k, v in args.items())),
            interpolate(str(spec.get("target") or ""), env),
        )
    return specs, sorted(ignored)


# -- what docker save gives -----------------------------------------------------------------------


@dataclass
class Blob:
    path: Path
    digest: str  # sha256:...
    size: int


@dataclass
class Saved:
    """An image as docker save gave it, as a registry serves it: its manifest and blobs."""

    image_id: str
    manifest: bytes
    blobs: dict[str, Blob]  # digest -> file
    size: int  # the layers' bytes

    @property
    def manifest_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()


def read_saved(stream: Iterator[bytes], folder: Path) -> Saved:
    """Take `docker save`'s tar, as it streams, apart into `folder`: every file once, hashed as it
    is written; then its manifest.json says which are the config and the layers (both the legacy
    layout and the OCI one of Docker 25+)."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Blob] = {}
    reader: Any = _StreamReader(stream)  # tarfile's stream mode needs only read()
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for number, member in enumerate(tar):
            if not member.isfile():
                continue
            source = tar.extractfile(member)
            if source is None:
                continue
            path = folder / str(number)
            digest = hashlib.sha256()
            with path.open("wb") as out:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            files[posixpath.normpath(member.name)] = Blob(path, "sha256:" + digest.hexdigest(), member.size)
    try:
        (entry,) = json.loads(files["manifest.json"].path.read_bytes())
        config = files[posixpath.normpath(entry["Config"])]
        layers = [files[posixpath.normpath(name)] for name in entry["Layers"]]
    except (KeyError, ValueError, TypeError) as err:
        raise DeployError(f"docker save gave an archive this action cannot read ({err})", "report this") from None
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [
            {"mediaType": _layer_type(layer.path), "digest": layer.digest, "size": layer.size} for layer in layers
        ],
    }
    blobs = {blob.digest: blob for blob in (config, *layers)}
    return Saved(config.digest, json.dumps(manifest).encode(), blobs, sum(layer.size for layer in layers))


def _layer_type(path: Path) -> str:
    with path.open("rb") as file:
        return OCI_LAYER + "+gzip" if file.read(2) == b"\x1f\x8b" else OCI_LAYER


class _StreamReader:
    """A file-like view of an iterator of byte chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            try:
                self.buffer += next(self.chunks)
            except StopIteration:
                break
        if size < 0:
            size = len(self.buffer)
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out


# -- the registry each host pulls from --------------------------------------------------------------


class Registry:
    """A read-only registry (the distribution API's pull half) on 127.0.0.1, serving `images`
    (repository:tag -> Saved); counts the bytes it sent. A TLS hello gets a plain HTTP answer, as
    dockerd expects of a registry on loopback: it then asks again over HTTP."""

    def __init__(self, images: Mapping[str, Saved]) -> None:
        self.images = dict(images)
        self.blobs = {digest: blob for saved in images.values() for digest, blob in saved.blobs.items()}
        self.manifests = {saved.manifest_digest: saved for saved in images.values()}
        self.sent = 0
        self.sent_by_digest: dict[str, int] = {}
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.read(1)
            if first == b"\x16":  # a TLS handshake: no TLS here
                writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            pending = first
            while pending or not reader.at_eof():
                line = pending + await reader.readline()
                pending = b""
                if not line.strip():
                    if reader.at_eof():
                        return
                    continue
                headers: dict[str, str] = {}
                while (header := await reader.readline()).strip():
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                parts = line.decode("latin-1").split()
                if len(parts) != 3:
                    return
                await self.answer(writer, parts[0], parts[1].split("?", 1)[0])
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def answer(self, writer: asyncio.StreamWriter, method: str, path: str) -> None:
        found = self.route(path)
        if method not in ("GET", "HEAD") or found is None:
            status = "405 Method Not Allowed" if found is not None else "404 Not Found"
            body = b'{"errors": [{"code": "NOT_FOUND", "message": "not found"}]}'
            self.head(writer, status, len(body), "application/json", "")
            writer.write(body)
            await writer.drain()
            return
        kind, digest, content = found
        size = len(content) if isinstance(content, bytes) else content.size
        self.head(writer, "200 OK", size, kind, digest)
        if method == "HEAD":
            await writer.drain()
            return
        if isinstance(content, bytes):
            writer.write(content)
            self.count(digest, len(content))
            await writer.drain()
            return
        with content.path.open("rb") as file:
            while chunk := await asyncio.to_thread(file.read, CHUNK):
                writer.write(chunk)
                self.count(digest, len(chunk))
                await writer.drain()

    def count(self, digest: str, size: int) -> None:
        self.sent += size
        if digest:
            self.sent_by_digest[digest] = self.sent_by_digest.get(digest, 0) + size

    def route(self, path: str) -> tuple[str, str, bytes | Blob] | None:
        if path in ("/v2", "/v2/"):
            return "application/json", "", b"{}"
        match = re.fullmatch(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)", path)
        if not match:
            return None
        name, kind, ref = match.group("name", "kind", "ref")
        if kind == "blobs":
            blob = self.blobs.get(ref)
            return ("application/octet-stream", ref, blob) if blob else None
        saved = self.manifests.get(ref) if ref.startswith("sha256:") else self.images.get(f"{name}:{ref}")
        return (OCI_MANIFEST, saved.manifest_digest, saved.manifest) if saved else None

    @staticmethod
    def head(writer: asyncio.StreamWriter, status: str, length: int, kind: str, digest: str) -> None:
        lines = [
            f"HTTP/1.1 {status}",
            f"Content-Length: {length}",
            f"Content-Type: {kind}",
            "Docker-Distribution-API-Version: registry/2.0",
            *([f"Docker-Content-Digest: {digest}"] if digest else []),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())


# -- the runner's side ----------------------------------------------------------------------------


@dataclass
class Built:
    image_id: str
    saved: Saved
    seconds: float  # the build and the save


@dataclass
class Runner:
    """The runner's docker and workspace, shared by every host of the run: each distinct build is
    made once and saved once, whichever host asks first; the others wait for it."""

    workspace: Path
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(SHIPPING_HOSTS))
    builds: dict[BuildSpec, Built] = field(default_factory=dict)
    folder: Path | None = None
    checked: str = ""  # the commit the workspace was found at
    _client: Any = None

    def check_workspace(self, sha: str) -> None:
        """Refuse unless the workspace is a checkout of `sha` (what is built is what is deployed)."""
        if self.checked == sha:
            return
        found = workspace_commit(self.workspace)
        if found != sha:
            raise DeployError(
                f"build: runner builds from the workspace ({self.workspace}), which is "
                + (f"at {found[:12]}" if found else "not a git checkout")
                + f", not at {sha[:12]}, the commit being deployed",
                "check the repository out at the deployed commit first (actions/checkout with ref: the same ref as "
                "the action's), or set build: host",
            )
        self.checked = sha

    def client(self) -> Any:
        if self._client is None:
            import docker  # the runner's docker: only build: runner needs it

            try:
                self._client = docker.from_env(timeout=1800)
                self._client.ping()
            except Exception as err:
                raise DeployError(
                    f"build: runner needs the runner's docker, which does not answer ({err})",
                    "run the job on a runner with docker (GitHub's ubuntu runners have it; a container action gets "
                    "its socket, /var/run/docker.sock), or set build: host",
                ) from None
        return self._client

    async def build(self, spec: BuildSpec, tag: str, service: str) -> Built:
        """`spec` built (once for the run) and saved."""
        async with self.lock:
            if spec not in self.builds:
                started = asyncio.get_running_loop().time()
                image_id = await asyncio.to_thread(self._build, spec, tag, service)
                if self.folder is None:
                    self.folder = Path(tempfile.mkdtemp(prefix="bluegreen-images."))
                saved = await asyncio.to_thread(self._save, image_id, self.folder / image_id.removeprefix("sha256:"))
                self.builds[spec] = Built(image_id, saved, asyncio.get_running_loop().time() - started)
            return self.builds[spec]

    def _build(self, spec: BuildSpec, tag: str, service: str) -> str:
        api = self.client().api
        output: list[str] = []
        image_id = ""
        for item in api.build(
            path=str(spec.context),
            dockerfile=spec.dockerfile,
            tag=tag,
            buildargs=dict(spec.args),
            target=spec.target or None,
            rm=True,
            forcerm=True,
            decode=True,
        ):
            if "stream" in item:
                output.append(str(item["stream"]))
            if "error" in item:
                text = "".join(output)
                raise DeployError(
                    f"the build of {service} on the runner failed: {item['error']}".strip(),
                    "fix the build; its output is above",
                    text[-20000:],
                    f"building {service} on the runner",
                )
            if isinstance(item.get("aux"), dict) and "ID" in item["aux"]:
                image_id = str(item["aux"]["ID"])
        if not image_id:
            image_id = str(self.client().images.get(tag).id)
        return image_id

    def _save(self, image_id: str, folder: Path) -> Saved:
        return read_saved(iter(self.client().api.get_image(image_id)), folder)

    def close(self) -> None:
        """Remove what the saves left on the runner's disk (the images stay in its docker)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
