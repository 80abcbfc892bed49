"""The action image's own costs, measured: cold build, size, container start to first SSH byte, and
what the entrypoint's imports cost, module by module.

    .venv/bin/python -m bench.startup

Start-to-first-byte: a listener on 127.0.0.1 stands in for sshd and notes when the action's SSH
client sends its first byte (the SSH version line) after `docker run` was started. Imports: Python's
own -X importtime in the image, cumulative per module, median of the runs."""

from __future__ import annotations

import socket
import statistics
import subprocess
import time

from lab import lab

from bluegreen.config import INPUTS

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n"


def first_byte_seconds(image: str) -> float:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(60)
        port = listener.getsockname()[1]
        key, _ = lab.client_key(lab.LAB_ROOT, "startup_key")
        inputs = {spec.name: spec.default for spec in INPUTS}
        inputs |= {
            "host": "127.0.0.1",
            "port": str(port),
            "username": "deploy",
            "key": key,
            "fingerprint": "SHA256:" + "A" * 43,
            "app-dir": "/srv/app",
            "ref": "main",
        }
        inputs |= {"blue-health-urls": "http://127.0.0.1:1/", "green-health-urls": "http://127.0.0.1:2/"}
        start = time.monotonic()
        running = lab.RunningAction(inputs, image=image)
        try:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1)
                return time.monotonic() - start
        finally:
            subprocess.run(["docker", "kill", running.name], capture_output=True)
            running.process.wait(30)


HEAVY = ("asyncssh", "httpx", "yaml", "github_action_utils", "bluegreen.config", "bluegreen.deploy", "main")


def import_seconds(image: str, runs: int = 5) -> dict[str, float]:
    """Median cumulative import time of the entrypoint and its heavy modules, in the image."""
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        done = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-X", "importtime", "-c",
             "import sys; sys.path.insert(0, '/action/entrypoint'); import main"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        for line in done.stderr.splitlines():
            fields = [part.strip() for part in line.removeprefix("import time:").split("|")]
            if len(fields) == 3 and fields[2] in HEAVY:
                samples.setdefault(fields[2], []).append(int(fields[1]) / 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    tag = "bluegreen-action:startup"
    start = time.monotonic()
    subprocess.run(
        ["docker", "build", "--no-cache", "--quiet", "--network", "host", "--tag", tag, str(lab.REPO_ROOT)],
        check=True,
        capture_output=True,
    )
    build = time.monotonic() - start
    size = int(
        subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Size}}", tag], check=True, capture_output=True, text=True
        ).stdout
    )
    base = int(
        subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Size}}", "python:3.12-slim"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    firsts = [first_byte_seconds(tag) for _ in range(5)]
    print("| what | figure |")
    print("| --- | --- |")
    print(f"| cold `docker build` (no cache; base image present) | {build:.1f} s |")
    print(f"| image size | {size / 1e6:.0f} MB, of which the base image is {base / 1e6:.0f} MB |")
    print(f"| container start to first SSH byte (median of 5) | {statistics.median(firsts):.2f} s |")
    imports = import_seconds(tag)
    print(f"| the entrypoint's imports (median of 5) | {imports.get('main', 0):.2f} s |")
    for name in HEAVY[:-1]:
        if name in imports:
            print(f"| of which `{name}` (with what it imports) | {imports[name]:.3f} s |")


if __name__ == "__main__":
    main()
