"""A private registry in the lab, as teams have one: Debian's docker-registry (the distribution
registry itself, with no hub behind it), TLS from a lab CA made with openssl, and htpasswd logins.

It runs on the hosts' lab network as registry.lab:5443; a host trusts it once given the lab CA
(/etc/docker/certs.d/registry.lab:5443/ca.crt, as docker reads it). This machine pushes to it
through its port published on 127.0.0.1, logged in with a docker config of its own, so no login is
left anywhere."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from lab import hosts, lab

NAME = "registry.lab"
PORT = 5443
CONTAINER = "bluegreen-lab-registry"
ROOT = lab.LAB_ROOT / "registry"

CONFIG = f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :{PORT}
  tls:
    certificate: /lab/registry.crt
    key: /lab/registry.key
auth:
  htpasswd:
    realm: bluegreen-lab
    path: /lab/htpasswd
"""


@dataclass
class Registry:
    port: int  # published on 127.0.0.1, for this machine's pushes
    user: str
    password: str
    ca: Path

    def ref(self, repository: str, tag: str) -> str:
        """The image as the hosts pull it."""
        return f"{NAME}:{PORT}/{repository}:{tag}"

    def push(self, image: str, repository: str, tag: str) -> str:
        """Push this machine's `image` as repository:tag; returns the digest the registry gave it."""
        local = f"127.0.0.1:{self.port}/{repository}:{tag}"
        config = tempfile.mkdtemp(prefix="bluegreen-lab-push.")
        try:
            lab.sh("docker", "tag", image, local)
            lab.sh(
                "docker",
                "--config",
                config,
                "login",
                "--username",
                self.user,
                "--password-stdin",
                f"127.0.0.1:{self.port}",
                input=self.password,
            )
            lab.sh("docker", "--config", config, "push", "--quiet", local)
            digests = lab.sh("docker", "image", "inspect", "--format", "{{json .RepoDigests}}", local)
        finally:
            shutil.rmtree(config, ignore_errors=True)
            with contextlib.suppress(RuntimeError):
                lab.sh("docker", "image", "rm", local)
        prefix = f"127.0.0.1:{self.port}/{repository}@"
        return next(d.strip('"[] ').removeprefix(prefix) for d in digests.split(",") if prefix in d)

    def trust(self, host: hosts.Host) -> None:
        """The host's dockerd trusts the lab CA for the registry (no restart needed)."""
        folder = f"/etc/docker/certs.d/{NAME}:{PORT}"
        host.exec("mkdir", "-p", folder)
        host.exec("sh", "-c", f"cat > {folder}/ca.crt", input=self.ca.read_text())

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            lab.sh("docker", "rm", "--force", CONTAINER)
        shutil.rmtree(Path(f"/etc/docker/certs.d/127.0.0.1:{self.port}"), ignore_errors=True)


def _certificates(root: Path) -> Path:
    """A lab CA and the registry's certificate from it (for registry.lab and 127.0.0.1)."""
    ca_key, ca = root / "ca.key", root / "ca.crt"
    key, csr, crt, ext = root / "registry.key", root / "registry.csr", root / "registry.crt", root / "ext.cnf"
    lab.sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bluegreen lab CA",
           "-keyout", ca_key, "-out", ca)  # fmt: skip
    lab.sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={NAME}", "-keyout", key, "-out", csr)
    ext.write_text(f"subjectAltName=DNS:{NAME},IP:127.0.0.1\n")
    lab.sh("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
           "-extfile", ext, "-out", crt)  # fmt: skip
    key.chmod(0o644)  # read by the registry inside its container
    return ca


def start_registry() -> Registry:
    """The registry, on the lab network, with a user of its own; ready once it answers."""
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    ca = _certificates(ROOT)
    user, password = "ci", secrets.token_urlsafe(18)
    (ROOT / "htpasswd").write_text(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}\n")
    (ROOT / "config.yml").write_text(CONFIG)
    with contextlib.suppress(RuntimeError):
        lab.sh("docker", "network", "create", hosts.NETWORK)
    with contextlib.suppress(RuntimeError):
        lab.sh("docker", "rm", "--force", CONTAINER)
    lab.sh(
        "docker", "run", "--detach", "--name", CONTAINER, "--network", hosts.NETWORK, "--network-alias", NAME,
        "--publish", f"127.0.0.1::{PORT}", "-v", "/usr/bin/docker-registry:/usr/bin/docker-registry:ro",
        "-v", f"{ROOT}:/lab:ro", lab.LAB_IMAGE, "docker-registry", "serve", "/lab/config.yml",
    )  # fmt: skip
    port = int(lab.sh("docker", "port", CONTAINER, f"{PORT}/tcp").splitlines()[0].rsplit(":", 1)[1])
    trusted = Path(f"/etc/docker/certs.d/127.0.0.1:{port}")  # this machine's pushes verify it too
    trusted.mkdir(parents=True, exist_ok=True)
    shutil.copy(ca, trusted / "ca.crt")

    def answers() -> bool:
        probe = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(ca)]
        done = subprocess.run([*probe, f"https://127.0.0.1:{port}/v2/"], capture_output=True, text=True, check=False)
        return done.stdout == "401"  # up, and asking for a login

    lab.wait_for(answers, "the lab registry to answer", 30)
    return Registry(port, user, password, ca)
