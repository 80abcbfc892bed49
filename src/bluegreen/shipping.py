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
import base64
import contextlib
import hashlib
import hmac
import json
import posixpath
import re
import secrets
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import DeployError, describe

_T = TypeVar("_T")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
BUILD_KEYS = {"context", "dockerfile", "args", "target"}  # what a runner build honours of `build:`
SHIPPING_HOSTS = 4  # hosts shipped to at once: each pull reads the runner's disk and its uplink
CHUNK = 1 << 20


# -- the workspace --------------------------------------------------------------------------------


def workspace_commit(workspace: Path) -> str:
    """The commit the workspace's git checkout is at (HEAD, through branches and symbolic refs),
    read from .git itself: the action's image has no git. "" if it cannot tell (no checkout, a
    reftable repository, a worktree whose .git names a path outside the container)."""
    git = workspace / ".git"
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if git.is_file():  # a worktree or a submodule: "gitdir: <path>"
            git = (workspace / git.read_text().strip().removeprefix("gitdir:").strip()).resolve()
        common = git
        if (git / "commondir").is_file():
            common = (git / (git / "commondir").read_text().strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        for _ in range(5):  # a symbolic ref may name another
            if not head.startswith("ref: "):
                return head if re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", head) else ""
            ref = head.removeprefix("ref: ")
            head = next((text for folder in (git, common) if (text := _read(folder / ref))), "")
            if not head:
                packed = _read(common / "packed-refs")
                head = next((line.split()[0] for line in packed.splitlines() if line.endswith(" " + ref)), "")
    return ""


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


# -- what to build --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildSpec:
    """A service's `build:` as the runner builds it."""

    context: Path
    dockerfile: str
    args: tuple[tuple[str, str], ...] = ()
    target: str = ""


# ${NAME}, ${NAME-x}, ${NAME:-x}, ${NAME?err}, ${NAME:?err}, ${NAME+x}, ${NAME:+x}, $NAME, $$
_VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<word>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))"
)
REFUSED_KEYS = {"dockerfile_inline", "additional_contexts"}  # a runner build would silently build otherwise


def interpolate(text: str, env: Mapping[str, str], where: str = "") -> str:
    """Variables as compose fills them in, from `env` (the env and vars inputs): unset and empty
    told apart as compose does; ${NAME?err} refuses when NAME is unset."""

    def one(match: re.Match[str]) -> str:
        if match.group("dollar"):
            return "$"
        name = match.group("braced") or match.group("plain")
        value, op, word = env.get(name), match.group("op") or "", match.group("word") or ""
        empty = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            return word if empty else str(value)
        if op.endswith("+"):
            return "" if empty else word
        if op.endswith("?") and empty:
            raise DeployError(
                f"{where}: {name} is not set ({word or 'required'})", f"set {name} in the env or vars input"
            )
        return value or ""

    return _VARIABLE.sub(one, text)


class _TextLoader(yaml.SafeLoader):
    """YAML as compose reads a build: every scalar text (false, 1.10), but for null and merge keys."""


_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag.endswith((":merge", ":null"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def build_specs(
    compose_text: str, compose_dir: Path, services: list[str], env: Mapping[str, str], file: str, workspace: Path
) -> tuple[dict[str, BuildSpec], list[str]]:
    """The build of each of `services` in a compose file (read from the workspace, every scalar as
    the text it is, as compose reads it), and the build keys a runner build does not honour (a
    warning). A remote context, a context or Dockerfile outside the workspace, and keys a runner
    build would get wrong without a word are refused."""
    data = yaml.load(compose_text, Loader=_TextLoader) or {}
    specs, ignored = {}, set()
    root = workspace.resolve()
    for service in services:
        build = ((data.get("services") or {}).get(service) or {}).get("build")
        spec: dict[str, Any] = {"context": build} if isinstance(build, str) else dict(build or {})
        where = f"{file}: the build of {service}"
        if refused := sorted(REFUSED_KEYS & set(spec)):
            raise DeployError(
                f"{where} uses {', '.join(refused)}, which build: runner does not support", "set build: host"
            )
        ignored |= set(spec) - BUILD_KEYS
        context = interpolate(str(spec.get("context") or "."), env, where)
        if "://" in context or context.startswith("git@"):
            raise DeployError(
                f"{where} has a remote context ({context}), which build: runner cannot use",
                "give it a folder of the repository as its context, or set build: host",
            )
        folder = (compose_dir / context).resolve()
        dockerfile = interpolate(str(spec.get("dockerfile") or "Dockerfile"), env, where)
        for path in (folder, (folder / dockerfile).resolve()):
            if path != root and root not in path.parents:
                raise DeployError(
                    f"{where} reaches outside the workspace ({path}): the runner would send what is there",
                    "keep its context and Dockerfile inside the repository, or set build: host",
                )
        args = spec.get("args") or {}
        if isinstance(args, list):
            args = dict((item.partition("=")[0], item.partition("=")[2] if "=" in item else None) for item in args)
        values = {}
        for name, value in args.items():  # one with no value takes env's, or is left to the Dockerfile
            if value is None:
                if name not in env:
                    continue
                value = env[name]
            values[str(name)] = interpolate(str(value), env, where)
        specs[service] = BuildSpec(
            folder, dockerfile, tuple(sorted(values.items())), interpolate(str(spec.get("target") or ""), env, where)
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
    platform: str = ""  # os/architecture, as its config says

    @property
    def manifest_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()


def read_saved(stream: Iterator[bytes], folder: Path) -> Saved:
    """Take `docker save`'s tar, as it streams, apart into `folder`: every file once, hashed as it
    is written; then its manifest.json says which are the config and the layers (both the legacy
    layout and the OCI one of Docker 25+)."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Blob] = {}
    links: dict[str, str] = {}  # a layer docker save gives twice is a link to the first (before Docker 25)
    reader: Any = _StreamReader(stream)  # tarfile's stream mode needs only read()
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for number, member in enumerate(tar):
            name = posixpath.normpath(member.name)
            if member.issym():
                links[name] = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
            elif member.islnk():
                links[name] = posixpath.normpath(member.linkname)
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
            files[name] = Blob(path, "sha256:" + digest.hexdigest(), member.size)
    for name, target in links.items():
        for _ in range(5):
            target = links.get(target, target)
        if target in files:
            files.setdefault(name, files[target])
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
    try:
        facts = json.loads(config.path.read_bytes())
        platform = f"{facts['os']}/{facts['architecture']}"
    except (KeyError, ValueError, TypeError):
        platform = ""
    return Saved(config.digest, json.dumps(manifest).encode(), blobs, sum(layer.size for layer in layers), platform)


def _layer_type(path: Path) -> str:
    with path.open("rb") as file:
        head = file.read(4)
    if head[:2] == b"\x1f\x8b":
        return OCI_LAYER + "+gzip"
    return OCI_LAYER + "+zstd" if head == b"\x28\xb5\x2f\xfd" else OCI_LAYER


class _StreamReader:
    """A file-like view of an iterator of byte chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buffer = bytearray()
        self.start = 0

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) - self.start < size:
            try:
                chunk = next(self.chunks)
            except StopIteration:
                break
            if self.start:  # drop what was read before growing
                del self.buffer[: self.start]
                self.start = 0
            self.buffer += chunk
        end = len(self.buffer) if size < 0 else min(len(self.buffer), self.start + size)
        out = bytes(self.buffer[self.start : end])
        self.start = end
        return out


# -- the registry each host pulls from --------------------------------------------------------------


REGISTRY_USER = "bluegreen"
HEADERS_MAX = 100  # header lines a request may have
READ_SECONDS = 60  # a client silent this long is dropped


class Registry:
    """A read-only registry (the distribution API's pull half) on 127.0.0.1, serving `images`
    (repository:tag -> Saved) to one client that knows `password` (HTTP Basic, as REGISTRY_USER):
    nobody else on the host reaches it through the forward. A blob is served only under a
    repository whose image holds it. Counts the bytes it sent. A TLS hello gets a plain HTTP answer,
    as dockerd expects of a registry on loopback: it then asks again over HTTP."""

    def __init__(self, images: Mapping[str, Saved]) -> None:
        self.images = dict(images)
        self.password = secrets.token_urlsafe(24)
        self.auth = "Basic " + base64.b64encode(f"{REGISTRY_USER}:{self.password}".encode()).decode()
        self.sent = 0
        self.sent_by_digest: dict[str, int] = {}
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):  # an idle keep-alive connection must not hold the close
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            first = await asyncio.wait_for(reader.read(1), READ_SECONDS)
            if first == b"\x16":  # a TLS handshake: no TLS here
                writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            pending = first
            while pending or not reader.at_eof():
                line = pending + await asyncio.wait_for(reader.readline(), READ_SECONDS)
                pending = b""
                if not line.strip():
                    if reader.at_eof():
                        return
                    continue
                headers: dict[str, str] = {}
                for _ in range(HEADERS_MAX + 1):
                    header = await asyncio.wait_for(reader.readline(), READ_SECONDS)
                    if not header.strip():
                        break
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                else:
                    return
                parts = line.decode("latin-1").split()
                if len(parts) != 3:
                    return
                allowed = hmac.compare_digest(headers.get("authorization", "").encode(), self.auth.encode())
                await self.answer(writer, parts[0], parts[1].split("?", 1)[0], allowed)
                if headers.get("connection", "").lower() == "close" or parts[2] != "HTTP/1.1":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            return
        finally:
            self.writers.discard(writer)
            writer.close()

    async def answer(self, writer: asyncio.StreamWriter, method: str, path: str, allowed: bool) -> None:
        if not allowed:
            body = b'{"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}'
            extra = [f'WWW-Authenticate: Basic realm="{REGISTRY_USER}"']
            await self.send(writer, method, "401 Unauthorized", body, "application/json", "", extra)
            return
        found = self.route(path)
        if method not in ("GET", "HEAD") or found is None:
            status = "405 Method Not Allowed" if found is not None else "404 Not Found"
            body = b'{"errors": [{"code": "NOT_FOUND", "message": "not found"}]}'
            await self.send(writer, method, status, body, "application/json", "")
            return
        kind, digest, content = found
        if isinstance(content, bytes):
            await self.send(writer, method, "200 OK", content, kind, digest)
            return
        self.head(writer, "200 OK", content.size, kind, digest)
        if method == "HEAD":
            await writer.drain()
            return
        with content.path.open("rb") as file:
            while chunk := await asyncio.to_thread(file.read, CHUNK):
                writer.write(chunk)
                self.count(digest, len(chunk))
                await writer.drain()

    async def send(
        self, writer: asyncio.StreamWriter, method: str, status: str, body: bytes, kind: str, digest: str,
        extra: Sequence[str] = (),
    ) -> None:  # fmt: skip
        self.head(writer, status, len(body), kind, digest, extra)
        if method != "HEAD":
            writer.write(body)
            self.count(digest, len(body))
        await writer.drain()

    def count(self, digest: str, size: int) -> None:
        self.sent += size
        if digest:
            self.sent_by_digest[digest] = self.sent_by_digest.get(digest, 0) + size

    def route(self, path: str) -> tuple[str, str, bytes | Blob] | None:
        if path in ("/v2", "/v2/"):
            return "application/json", "", b"{}"
        match = re.fullmatch(r"/v2/(?P<name>[a-z0-9._/-]+)/(?P<kind>manifests|blobs)/(?P<ref>[A-Za-z0-9_.:-]+)", path)
        if not match:
            return None
        name, kind, ref = match.group("name", "kind", "ref")
        mine = [saved for tagged, saved in self.images.items() if tagged.rpartition(":")[0] == name]
        if kind == "blobs":
            blob = next((saved.blobs[ref] for saved in mine if ref in saved.blobs), None)
            return ("application/octet-stream", ref, blob) if blob else None
        saved = next((m for m in mine if m.manifest_digest == ref), None) if ref.startswith("sha256:") else None
        saved = saved or self.images.get(f"{name}:{ref}")
        return (OCI_MANIFEST, saved.manifest_digest, saved.manifest) if saved else None

    @staticmethod
    def head(
        writer: asyncio.StreamWriter, status: str, length: int, kind: str, digest: str, extra: Sequence[str] = ()
    ) -> None:
        lines = [
            f"HTTP/1.1 {status}",
            f"Content-Length: {length}",
            f"Content-Type: {kind}",
            "Docker-Distribution-API-Version: registry/2.0",
            *([f"Docker-Content-Digest: {digest}"] if digest else []),
            *extra,
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())


# -- the runner's side ----------------------------------------------------------------------------


async def in_daemon_thread(function: Callable[..., _T], *args: object) -> _T:
    """`function(*args)` in a daemon thread: a cancelled run does not wait for it (a build step
    silent for minutes) to exit; the thread dies with the process."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: _T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result, error = function(*args), None
        except BaseException as err:  # handed to the awaiting task
            result, error = None, err
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits it any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=target, daemon=True).start()
    return await future


@dataclass
class Built:
    image_id: str
    saved: Saved
    seconds: float  # the build and the save


@dataclass
class Runner:
    """The runner's docker and workspace, shared by every host of the run: each distinct build is
    made once and saved once, whichever host asks first; the others wait for it. Distinct builds
    run at once, as compose builds a color's services on the host."""

    workspace: Path
    locks: dict[BuildSpec, asyncio.Lock] = field(default_factory=dict)
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(SHIPPING_HOSTS))
    builds: dict[BuildSpec, Built] = field(default_factory=dict)
    folder: Path | None = None
    checked: str = ""  # the commit the workspace was found at
    stop: threading.Event = field(default_factory=threading.Event)  # the run was cancelled: builds give up
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
        async with self.locks.setdefault(spec, asyncio.Lock()):
            if spec not in self.builds:
                started = asyncio.get_running_loop().time()
                try:
                    image_id = await in_daemon_thread(self._build, spec, tag, service)
                    if self.folder is None:
                        self.folder = Path(tempfile.mkdtemp(prefix="bluegreen-images."))
                    folder = self.folder / image_id.removeprefix("sha256:")
                    saved = await in_daemon_thread(self._save, image_id, folder)
                except asyncio.CancelledError:  # the thread stops at its next chunk, or dies with the
                    self.stop.set()  # process: its connection closes, which ends the build in docker
                    raise
                self.builds[spec] = Built(saved.image_id, saved, asyncio.get_running_loop().time() - started)
            return self.builds[spec]

    def _build(self, spec: BuildSpec, tag: str, service: str) -> str:
        try:
            return self._build_with_docker(spec, tag, service)
        except (DeployError, asyncio.CancelledError):
            raise
        except Exception as err:  # the docker SDK's, the HTTP client's and the disk's errors
            raise DeployError(
                f"the build of {service} on the runner failed: {describe(err)}",
                "check its context and Dockerfile (they must be in the repository) and the runner's docker and disk",
            ) from None

    def _build_with_docker(self, spec: BuildSpec, tag: str, service: str) -> str:
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
            if self.stop.is_set():
                raise DeployError(f"the build of {service} on the runner was cancelled", "rerun the job")
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
        try:
            return read_saved(self.until_stopped(self.client().api.get_image(image_id)), folder)
        except DeployError:
            raise
        except Exception as err:
            raise DeployError(
                f"saving the runner's image {image_id[:19]} failed: {describe(err)}",
                "check the runner's disk space (the image is saved to its temporary folder) and docker",
            ) from None

    def until_stopped(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            if self.stop.is_set():
                raise DeployError("saving the runner's image was cancelled", "rerun the job")
            yield chunk

    def close(self) -> None:
        """Remove what the saves left on the runner's disk (the images stay in its docker)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
