"""Where the colors' images come from, when a registry has them: pulled before the idle color starts.

    resolve (compose config) → pin (one digest per tag, fleet-wide) → log in and pull → record

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
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import yaml

from . import commands
from .config import COMPOSE_SECONDS, Color, Config
from .errors import DeployError
from .remote import Host, Result, checked, last_line
from .stacks import Stacks


@dataclass(frozen=True)
class ImageRecord:
    """One service's image as the host has it once the images step is done."""

    service: str
    image: str  # as the compose file names it, variables filled in
    id: str  # sha256:...: the same bytes on every host have the same id
    digest: str  # repo@sha256:... as the registry serves it; "" for an image no registry gave
    size: int  # bytes, as docker counts them
    pulled: str  # what was pulled (the tag, or the fleet's digest for it); "" if nothing was
    seconds: float

    def journal(self) -> dict[str, str]:
        return {"image": self.image, "id": self.id, "digest": self.digest}


@dataclass
class Pins:
    """The fleet's digest for each tag, from the first host that got it (see the module's docstring)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    digests: dict[str, str] = field(default_factory=dict)  # image -> repo@sha256:... ("" if it has none)


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


def pulled_images(config_text: str, built: Mapping[str, str]) -> dict[str, str]:
    """The services of a color that are pulled: service -> image, from `compose config` output (with
    the color's variables filled in). `built`: the color's services with a build, and the image each
    names ("" if none); an image one of them makes is never pulled."""
    try:
        data = yaml.safe_load(config_text) or {}
    except yaml.YAMLError:
        data = {}
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict):
        return {}
    made = set(built.values())
    out = {}
    for name, spec in services.items():
        if not isinstance(spec, dict) or spec.get("build") is not None:
            continue
        image = spec.get("image")
        if isinstance(image, str) and image and image not in made:
            out[str(name)] = image
    return out


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
    """The pull step of one host (see the module's docstring)."""

    def __init__(self, host: Host, config: Config, stacks: Stacks, info: Callable[[str], None], pins: Pins) -> None:
        self.host = host
        self.cfg = config
        self.stacks = stacks
        self.info = info
        self.pins = pins
        self.records: list[ImageRecord] = []

    def wanted(self, color: Color) -> bool:
        """Whether `color`'s compose file names an image it does not build: only then is there a step."""
        return bool(self.stacks.files[color].pulled)

    async def resolve(self, color: Color) -> dict[str, str]:
        """service -> image, as compose reads the color's file (variables filled in)."""
        config = await checked(
            self.host,
            self.stacks.compose(color).config(),
            f"reading {self.cfg.compose_file_for(color)} with compose config",
            f"fix {self.cfg.compose_file_for(color)}; 'docker compose config' shows what compose reads",
            COMPOSE_SECONDS,
        )
        return pulled_images(config, self.stacks.files[color].built)

    async def pull(self, color: Color) -> str:
        """Get `color`'s pulled images as `pull` says (pinned to the fleet's digests) and record
        them; returns the step's detail. Changes no container."""
        wanted = await self.resolve(color)
        images = list(dict.fromkeys(wanted.values()))
        if not images:
            return "no image to pull"
        before = await self.host.run(commands.image_ids(images), check=False)
        self.stacks.replaced.update(before.stdout.split())  # a tag that moves leaves its old image to prune
        timings: dict[str, tuple[str, float]] = {}
        for image in images:
            async with self.pins.lock:
                if image not in self.pins.digests:  # the first host to get it: the tag itself
                    timings[image] = await self.get(image, image)
                    self.pins.digests[image] = (await self.facts([image]))[0][1]
                    continue
            pin = self.pins.digests[image] if self.cfg.pull != "never" else ""
            timings[image] = await self.get(pin or image, image)
        facts = dict(zip(images, await self.facts(images), strict=True))
        self.records = [
            ImageRecord(service, image, *facts[image], *timings[image]) for service, image in wanted.items()
        ]
        got = sum(1 for image in images if timings[image][0])
        return f"{got} of {len(images)} pulled ({self.cfg.pull})" if got else f"all {len(images)} on the host already"

    async def get(self, ref: str, image: str) -> tuple[str, float]:
        """Pull `ref` as `image` (as pull says); returns what was pulled ("" if nothing) and the time."""
        cfg = self.cfg
        started = time.monotonic()
        had = (await self.host.run(commands.image_ids([image]), check=False)).stdout.strip()
        argv = commands.pull_images(cfg.pull, cfg.registry, cfg.registry_username, [(ref, image)])
        result = await self.host.run(
            argv, input=cfg.registry_password if cfg.registry_username else None, timeout=COMPOSE_SECONDS, check=False
        )
        if not result.ok:
            raise self.refusal(ref, image, result)
        pulled = ref if cfg.pull == "always" or not had else ""
        return pulled, time.monotonic() - started

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

    def refusal(self, ref: str, image: str, result: Result) -> DeployError:
        cfg = self.cfg
        output = result.stderr.strip()
        answer = last_line("\n".join(line for line in output.splitlines() if not line.startswith("bluegreen: ")))
        where = cfg.registry or "Docker Hub"
        if commands.PULL_LOGIN_FAILED in output:
            return DeployError(
                f"logging in to {where} as {cfg.registry_username} failed: {answer}; nothing was changed",
                "check registry, registry-username and registry-password (a token that may read the images; for "
                "GHCR, GITHUB_TOKEN with permissions: packages: read)",
                output,
                f"logging in to {where}",
            )
        if commands.PULL_MISSING in output:
            return DeployError(
                f"{image} is not on the host and pull is never; nothing was changed",
                "set pull: missing (or always), or put the image on the host first",
            )
        return DeployError(
            f"pulling {ref} failed: {answer}; nothing was changed",
            "check that the image exists with that tag and that the registry lets the host read it (registry, "
            "registry-username, registry-password)",
            output,
            f"pulling {image}",
        )
