"""Fixtures for the end-to-end tests: the real lab (dockerd, sshd, nginx, compose), shared per session."""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import docker
import pytest
from lab import lab

pytestmark = pytest.mark.e2e


def _lab_available() -> str:
    if os.geteuid() != 0:
        return "the lab needs root"
    try:
        docker.from_env().ping()
    except Exception as err:
        return f"dockerd is not reachable ({err}); run scripts/bootstrap"
    return ""


@pytest.fixture(scope="session")
def lab_ready() -> None:
    reason = _lab_available()
    if reason:
        pytest.fail(reason)


@pytest.fixture(scope="session")
def action_image(lab_ready: None) -> str:
    lab.build_action_image()
    return lab.ACTION_IMAGE


@pytest.fixture(scope="session")
def ssh_host(action_image: str) -> Iterator[lab.SshHost]:
    host = lab.start_sshd()
    yield host
    host.stop()


# The shapes users have: Compose v1 and v2 on the host, and the app on the host network or on the
# project's bridge network (service-name DNS, a shared named volume), its files where the seed has them
# or a folder per stack (deploy/<stack>/compose.yml: one basename, paths relative to each folder).
# Tests marked with SHAPES run on each network and Compose; LAYOUTS adds the folder layout on the
# bridge network; the rest run on v1, the host network and the seed's files.
SEED_SHAPES = [(compose, variant, "seed") for compose in lab.COMPOSE_VARIANTS for variant in lab.VARIANTS]
FOLDER_SHAPES = [(compose, "bridge", "folders") for compose in lab.COMPOSE_VARIANTS]


def shape_id(shape: tuple[str, ...]) -> str:
    return "-".join(part for part in shape if part != "seed")


SHAPES = pytest.mark.parametrize("app", SEED_SHAPES, indirect=True, ids=shape_id)
LAYOUTS = pytest.mark.parametrize("app", SEED_SHAPES + FOLDER_SHAPES, indirect=True, ids=shape_id)


@pytest.fixture
def app(request: pytest.FixtureRequest) -> Iterator[lab.LabApp]:
    compose, variant, *layout = getattr(request, "param", ("v1", "host"))
    lab.use_compose(compose)
    made = lab.make_app(variant=variant, layout=layout[0] if layout else "seed")
    yield made
    made.teardown()


@dataclass
class Load:
    """Steady GETs through nginx on a background thread while the block runs; records every answer."""

    url: str
    pause: float = 0.02
    clients: int = 1  # threads sending at once, each waiting `pause` between its requests
    statuses: list[int] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)  # monotonic times of failed requests
    bodies: list[str] = field(default_factory=list)
    answered: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, body) of each 2xx
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    self.statuses.append(response.status)
                    body = response.read().decode()
                    self.bodies.append(body)
                    self.answered.append((time.monotonic(), body))
            except urllib.error.HTTPError as err:
                self.statuses.append(err.code)
                self.failed_at.append(time.monotonic())
            except OSError as err:
                self.errors.append(str(err))
                self.failed_at.append(time.monotonic())
            self._stop.wait(self.pause)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def failure_window(self) -> float:
        """Seconds from the first failed request to the last one."""
        return max(self.failed_at) - min(self.failed_at) if self.failed_at else 0.0

    @property
    def failures(self) -> list[str]:
        return self.errors + [f"HTTP {s}" for s in self.statuses if not 200 <= s < 300]
