"""Where the colors' images come from, when the host does not build them: shipped from the runner
(`build: runner`, see `shipping`), or pulled from a registry. Both happen before the idle color starts.

    ship:  the runner builds each service once → the host pulls it over the SSH connection → tag
    pull:  resolve (compose config) → pin (one digest per tag, fleet-wide) → log in and pull
    then:  record each image (id, digest, size, bytes sent, time)

A color service that names an `image:` and has no `build:` is pulled, unless a build of the same
color makes that image (a frontend that runs the backend's build): pulling that name would fetch
somebody else's image, or fail. `pull` says when: always (a tag that moved is deployed as the new
image; compose's `up` alone never pulls a tag the host already holds), missing, or never. The login
(registry, registry-username, registry-password) lives only as long as one pull command
(commands.PULL_SCRIPT). Everything here runs before any container changes; a failure is a
DeployError that leaves the live color serving. A rollback never comes here: it starts the kept
containers.

In a fleet, the first host to pull a tag pins it: the digest it got (`Pins`) is what every other
host pulls, so a tag that moves between two hosts' pulls still gives one image everywhere. The fleet
checks it before any switch (fleet.Fleet.check_images).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import yaml

from . import commands
from .config import COMPOSE_SECONDS, Color, Config
from .errors import DeployError
from .remote import Host, Result, checked, last_line
from .report import size_text
from .shipping import REGISTRY_USER, Built, Registry, Runner, build_specs
from .stacks import Stacks


class ShipHost(Host, Protocol):
    """A host the runner's images can reach: through a remote forward of the SSH connection."""

    def reverse_forward(self, port: int) -> AbstractAsyncContextManager[int]: ...


@dataclass(frozen=True)
class ImageRecord:
    """One service's image as the host has it once the images step is done."""

    service: str
    image: str  # as the compose file names it, variables filled in
    id: str  # sha256:...: the same bytes on every host have the same id
    digest: str  # repo@sha256:... as the registry serves it; "" for an image no registry gave
    size: int  # bytes, as docker counts them
    pulled: str  # what was pulled (the tag, the fleet's digest for it, or the runner's); "" if nothing was
    seconds: float
    sent: int = -1  # bytes the runner sent this host for it (build: runner); -1 when a registry sent them

    def journal(self) -> dict[str, str | int]:
        shipped: dict[str, str | int] = {"sent": self.sent} if self.sent >= 0 else {}
        return {"image": self.image, "id": self.id, "digest": self.digest, **shipped}


@dataclass
class Pins:
    """The fleet's digest for each tag, from the first host that got it (see the module's docstring)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    digests: dict[str, str] = field(default_factory=dict)  # image -> repo@sha256:... ("" if it has none)


@dataclass
class Shared:
    """What every host of a run shares: the pins, and (build: runner) the runner's builds."""

    pins: Pins = field(default_factory=Pins)
    runner: Runner | None = None

    @classmethod
    def of(cls, config: Config) -> Shared:
        """The runner builds from the job's workspace (GITHUB_WORKSPACE; the CLI's folder)."""
        if config.build != "runner":
            return cls()
        return cls(runner=Runner(Path(os.environ.get("GITHUB_WORKSPACE") or ".").resolve()))

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()


def normal_repo(name: str) -> str:
    """A repository as docker shows it: docker.io/library/nginx and library/nginx are nginx."""
    for prefix in ("docker.io/", "index.docker.io/"):
        name = name.removeprefix(prefix)
    return name.removeprefix("library/")


def repository(image: str) -> str:
    """The repository of an image reference: registry.example.com:5000/app:1 is registry.example.com:5000/app."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def digest_for(image: str, repo_digests: list[str]) -> str:
    """The repo@sha256:... a host got `image` as, from its RepoDigests; "" if no registry gave it."""
    if "@" in image:
        return f"{repository(image)}@{image.split('@', 1)[1]}"
    repo = normal_repo(repository(image))
    for item in repo_digests:
        name, _, digest = item.partition("@")
        if normal_repo(name) == repo and digest:
            return f"{repository(image)}@{digest}"
    return ""


# An image reference as docker takes it: no blank, no leading "-" (never read as an option).
_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")


def pulled_images(config_text: str, default_name: Callable[[str], str]) -> dict[str, str]:
    """The services of a color that are pulled: service -> image, from `compose config` output (with
    the color's variables filled in). A service with a build makes its image: (or the name compose
    gives it, `default_name`), and an image one of them makes is never pulled. A name docker would
    not take is refused."""
    try:
        data = yaml.safe_load(config_text) or {}
    except yaml.YAMLError:
        data = {}
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict):
        return {}
    specs = {str(name): spec for name, spec in services.items() if isinstance(spec, dict)}
    made = {
        spec["image"] if isinstance(spec.get("image"), str) and spec["image"] else default_name(name)
        for name, spec in specs.items()
        if spec.get("build") is not None
    }
    out = {}
    for name, spec in specs.items():
        image = spec.get("image")
        if spec.get("build") is not None or not isinstance(image, str) or not image or image in made:
            continue
        if not _REFERENCE.match(image):
            raise DeployError(
                f"the image of {name} is {image!r}, which is not an image reference",
                "name the image as registry/repository:tag (or @sha256:...)",
            )
        out[name] = image
    return out


def built_names(config_text: str, default_name: Callable[[str], str], services: list[str]) -> dict[str, str]:
    """The image each of `services` (which have a build) is tagged as, from `compose config`
    output: its image: with variables filled in, or the name compose gives it."""
    data = yaml.safe_load(config_text) or {}
    specs = data.get("services") if isinstance(data, dict) else None
    specs = specs if isinstance(specs, dict) else {}
    out = {}
    for service in services:
        image = (specs.get(service) or {}).get("image")
        out[service] = image if isinstance(image, str) and image else default_name(service)
        if not _REFERENCE.match(out[service]):
            raise DeployError(
                f"the image of {service} is {out[service]!r}, which is not an image reference",
                "name the image as registry/repository:tag",
            )
    return out


def repository_name(name: str) -> str:
    """`name` as a registry repository may be named: lower case; between letters and digits, only
    ".", "_", "__" or dashes (any other run of characters becomes "-")."""

    def separator(match: re.Match[str]) -> str:
        run = match.group()
        return run if run in (".", "_", "__") or set(run) == {"-"} else "-"

    parts = [re.sub(r"[^a-z0-9]+", separator, part.lower()).strip("._-") or "x" for part in name.split("/")]
    return "/".join(parts)


def parse_records(text: str) -> list[tuple[str, int, list[str]]]:
    """commands.image_records lines: (id, size, repo digests)."""
    out = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 3:
            continue
        try:
            digests = json.loads(fields[2]) or []
            size = int(fields[1])
        except ValueError:
            continue
        out.append((fields[0], size, [str(d) for d in digests]))
    return out


class Images:
    """The images step of one host (see the module's docstring)."""

    def __init__(
        self,
        host: ShipHost,
        config: Config,
        stacks: Stacks,
        info: Callable[[str], None],
        shared: Shared,
        records: list[ImageRecord] | None = None,
    ) -> None:
        self.host = host
        self.cfg = config
        self.stacks = stacks
        self.info = info
        self.shared = shared
        self.records = records if records is not None else []  # the report's: each image the step got

    def wanted(self, color: Color) -> bool:
        """Whether `color` has images the host does not build (only then is there a step)."""
        files = self.stacks.files[color]
        return bool(files.pulled) or (self.cfg.build == "runner" and bool(files.built))

    async def get(self, color: Color, sha: str) -> str:
        """Ship what the runner builds, then pull what a registry has; returns the step's detail."""
        done = []
        if self.cfg.build == "runner" and self.stacks.files[color].built:
            done.append(await self.ship(color, sha))
        if self.stacks.files[color].pulled:
            done.append(await self.pull(color))
        return "; ".join(done)

    async def ship(self, color: Color, sha: str) -> str:
        """build: runner. Each service of `color` with a build, built once on the runner, pulled by
        the host from the runner through its SSH connection (only the layers it lacks, logged in to
        a registry only this pull knows the password of) and tagged as compose names it; the host's
        image must be the runner's."""
        runner = self.shared.runner
        assert runner is not None
        runner.check_workspace(sha)
        file = self.cfg.compose_file_for(color)
        try:
            text = (runner.workspace / file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DeployError(f"build: runner cannot read {file} in the workspace ({err})", "check it out") from None
        services = list(self.stacks.files[color].built)
        folder = (runner.workspace / file).parent
        specs, ignored = build_specs(text, folder, services, dict(self.cfg.env), file, runner.workspace)
        if ignored:
            self.info(
                f"build: runner builds with context, dockerfile, args and target; it ignores {', '.join(ignored)}"
            )
        names = built_names(await self.config(color), self.stacks.default_image(color), services)
        before = await self.host.run(commands.image_ids(list(names.values())), check=False)
        self.stacks.replaced.update(before.stdout.split())
        project = self.stacks.compose(color).project
        repos = {service: repository_name(f"bluegreen/{project}-{service}") for service in services}
        done = await asyncio.gather(
            *(runner.build(spec, f"{repos[service]}:{sha[:12]}", service) for service, spec in specs.items())
        )
        built: dict[str, Built] = dict(zip(specs, done, strict=True))
        await self.check_platform(built)
        async with runner.slots:
            registry = Registry({f"{repos[s]}:{sha[:12]}": b.saved for s, b in built.items()})
            port = await registry.start()
            started = time.monotonic()
            try:
                async with self.host.reverse_forward(port) as there:
                    pairs = [(f"127.0.0.1:{there}/{repos[s]}:{sha[:12]}", names[s]) for s in services]
                    try:
                        result = await self.host.run(
                            commands.pull_images("always", f"127.0.0.1:{there}", REGISTRY_USER, pairs),
                            input=registry.password + "\n",
                            hold_stdin=True,
                            timeout=COMPOSE_SECONDS,
                            check=False,
                        )
                    finally:  # the transit names, whatever the pull did (never hiding why it ended)
                        transit = list(dict.fromkeys(p[0] for p in pairs))
                        with contextlib.suppress(Exception):
                            await self.host.run(commands.untag(transit), check=False)
                    if not result.ok:
                        raise DeployError(
                            f"the host could not pull the runner's images: {last_line(result.stderr)}",
                            "check that the host's dockerd reaches its own 127.0.0.1 (a rootless docker does not) "
                            "and has disk space, or set build: host",
                            result.stderr,
                            "pulling the runner's images",
                        )
            finally:
                await registry.close()
            seconds = time.monotonic() - started
        facts = dict(zip(services, await self.facts([names[s] for s in services]), strict=True))
        for service in services:
            image_id, _, size = facts[service]
            saved = built[service].saved
            if image_id not in (saved.image_id, saved.manifest_digest):  # the containerd store's id: the manifest's
                raise DeployError(
                    f"{names[service]} on the host is {image_id[:19]}, not the runner's {saved.image_id[:19]}",
                    "rerun the job; if it persists, set build: host and report this",
                )
            sent = sum(registry.sent_by_digest.get(d, 0) for d in (*saved.blobs, saved.manifest_digest))
            digest = f"{repos[service]}@{saved.manifest_digest}"
            self.records.append(ImageRecord(service, names[service], image_id, digest, size, "runner", seconds, sent))
        return f"built on the runner, {size_text(registry.sent)} sent to the host"

    async def check_platform(self, built: Mapping[str, Built]) -> None:
        """Refuse, before anything is sent, an image built for another CPU than the host's."""
        answer = await self.host.run(commands.server_platform(), check=False)
        host = answer.stdout.strip()
        for service, one in built.items():
            if host and one.saved.platform and one.saved.platform != host:
                raise DeployError(
                    f"the runner built {service} for {one.saved.platform}, but the host runs {host}",
                    "run the job on a runner of the host's platform, or set build: host",
                )

    async def config(self, color: Color) -> str:
        """The color's compose file as compose reads it on the host (variables filled in)."""
        return await checked(
            self.host,
            self.stacks.compose(color).config(),
            f"reading {self.cfg.compose_file_for(color)} with compose config",
            f"fix {self.cfg.compose_file_for(color)}; 'docker compose config' shows what compose reads",
            COMPOSE_SECONDS,
        )

    async def resolve(self, color: Color) -> dict[str, str]:
        """service -> image, as compose reads the color's file (variables filled in)."""
        return pulled_images(await self.config(color), self.stacks.default_image(color))

    async def pull(self, color: Color) -> str:
        """Get `color`'s pulled images as `pull` says and record them; returns the step's detail.
        Changes no container. With `always`, the first host of the run to get a tag pins the digest
        it got, which every other host pulls; `missing` and `never` pin nothing (a host keeps what
        it has, and the fleet compares before any switch). An image named with a digest is pulled
        as it is named."""
        wanted = await self.resolve(color)
        images = list(dict.fromkeys(wanted.values()))
        if not images:
            return "no image to pull"
        before = await self.host.run(commands.image_ids(images), check=False)
        self.stacks.replaced.update(before.stdout.split())  # a tag that moves leaves its old image to prune
        got: dict[str, tuple[str, str, float]] = {}  # image -> (what was pulled, its digest, seconds)
        if self.cfg.pull != "always":
            got = await self.fetch([(image, image) for image in images])
        else:
            async with self.shared.pins.lock:  # the first host pulls the tags; the others wait for its digests
                first = [i for i in images if "@" not in i and i not in self.shared.pins.digests]
                if first:
                    got = await self.fetch([(image, image) for image in first])
                    for image in first:
                        digest = got[image][1] if image in got else ""
                        self.shared.pins.digests.setdefault(image, f"{repository(image)}@{digest}" if digest else "")
            rest = [i for i in images if i not in first]  # pinned, or named by digest: pulled as named
            if rest:
                got |= await self.fetch([(self.shared.pins.digests.get(image) or image, image) for image in rest])
        facts = dict(zip(images, await self.facts(images), strict=True))
        for service, image in wanted.items():
            image_id, digest, size = facts[image]
            pulled, served, seconds = got.get(image, ("", "", 0.0))
            if served:
                digest = f"{repository(image)}@{served}"
            self.records.append(ImageRecord(service, image, image_id, digest, size, pulled, seconds))
        count = sum(1 for image in images if got.get(image, ("",))[0])
        return (
            f"{count} of {len(images)} pulled ({self.cfg.pull})" if count else f"all {len(images)} on the host already"
        )

    async def fetch(self, pairs: list[tuple[str, str]]) -> dict[str, tuple[str, str, float]]:
        """Pull each (what, as) pair as `pull` says, in one command (one login); returns, for each
        image pulled, what was pulled, the digest the registry served and the command's time."""
        cfg = self.cfg
        started = time.monotonic()
        argv = commands.pull_images(cfg.pull, cfg.registry, cfg.registry_username, pairs)
        password = cfg.registry_password if cfg.registry_username else ""
        result = await self.host.run(argv, input=password + "\n", hold_stdin=True, timeout=COMPOSE_SECONDS, check=False)
        if not result.ok:
            raise self.refusal(result)
        seconds = time.monotonic() - started
        pulled = commands.parse_pulled(result.stdout)
        return {image: (ref, pulled[image], seconds) for ref, image in pairs if image in pulled}

    async def facts(self, images: list[str]) -> list[tuple[str, str, int]]:
        """(id, digest, size) of each image, in order."""
        listing = await checked(
            self.host,
            commands.image_records(images),
            "reading the pulled images",
            "check that docker works for the deploy user",
        )
        rows = parse_records(listing)
        if len(rows) != len(images):
            raise DeployError(
                f"docker image inspect gave {len(rows)} answers for {len(images)} images", "rerun the job"
            )
        return [
            (image_id, digest_for(image, digests), size)
            for image, (image_id, size, digests) in zip(images, rows, strict=True)
        ]

    def refusal(self, result: Result) -> DeployError:
        """The pull script's failure in words: the registry's own answer, and what it was about."""
        cfg = self.cfg
        output = result.stderr.strip()
        answer = last_line("\n".join(line for line in output.splitlines() if not line.startswith("bluegreen: ")))
        named = [line.split(": ", 2)[-1] for line in output.splitlines() if line.startswith("bluegreen: ")]
        what = named[-1] if named else "the images"
        where = cfg.registry or "Docker Hub"
        untouched = "no container was changed"
        if commands.PULL_LOGIN_FAILED in output:
            return DeployError(
                f"logging in to {where} as {cfg.registry_username} failed: {answer}; {untouched}",
                "check registry, registry-username and registry-password (a token that may read the images; for "
                "GHCR, GITHUB_TOKEN with permissions: packages: read)",
                output,
                f"logging in to {where}",
            )
        if commands.PULL_MISSING in output:
            return DeployError(
                f"{what} is not on the host and pull is never; {untouched}",
                "set pull: missing (or always), or put the image on the host first",
            )
        if commands.PULL_FAILED not in output:
            return DeployError(
                f"pulling the images failed (exit {result.status}): {answer}; {untouched}",
                "rerun the job; if it persists, check docker on the host",
                output,
                "pulling the images",
            )
        return DeployError(
            f"pulling {what} failed: {answer}; {untouched}",
            "check that the image exists with that tag and that the registry lets the host read it (registry, "
            "registry-username, registry-password)",
            output,
            f"pulling {what}",
        )
