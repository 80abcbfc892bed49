"""Key parsing: every accepted format, and one clear message per kind of bad paste."""

from __future__ import annotations

import socket

import asyncssh
import pytest

from bluegreen.config import INPUTS, Config, load_config
from bluegreen.remote import RemoteError, connect_reason, host_key_plans, load_key

ED25519 = asyncssh.generate_private_key("ssh-ed25519")
RSA = asyncssh.generate_private_key("ssh-rsa", key_size=2048)


def config(key: str, passphrase: str = "") -> Config:
    raw = {spec.name: spec.default for spec in INPUTS}
    raw.update(
        host="h.example.com",
        username="deploy",
        key=key,
        passphrase=passphrase,
        fingerprint="SHA256:" + "A" * 43,
        ref="main",
    )
    raw.update(
        {"app-dir": "/srv/app", "blue-health-urls": "http://127.0.0.1:1/", "green-health-urls": "http://127.0.0.1:2/"}
    )
    return load_config(raw)


@pytest.mark.parametrize(
    "text",
    [
        ED25519.export_private_key("openssh").decode(),
        RSA.export_private_key("pkcs1-pem").decode(),
        RSA.export_private_key("pkcs8-pem").decode(),
        "  \n" + ED25519.export_private_key("openssh").decode() + "\n\n",
    ],
    ids=["openssh", "pem", "pkcs8", "surrounding-blank-lines"],
)
def test_accepted_formats(text: str) -> None:
    assert load_key(config(text)).get_algorithm() in ("ssh-ed25519", "ssh-rsa")


def test_encrypted_key_with_its_passphrase() -> None:
    text = ED25519.export_private_key("openssh", passphrase="correct horse").decode()
    assert load_key(config(text, "correct horse")).public_data == ED25519.public_data


def test_wrong_passphrase() -> None:
    text = ED25519.export_private_key("openssh", passphrase="correct horse").decode()
    with pytest.raises(RemoteError, match="input 'passphrase' does not decrypt the key") as err:
        load_key(config(text, "battery staple"))
    assert "passphrase" in err.value.fix


def test_encrypted_key_without_passphrase() -> None:
    text = RSA.export_private_key("pkcs8-pem", passphrase="x").decode()
    with pytest.raises(RemoteError, match="encrypted and no passphrase"):
        load_key(config(text))


def test_public_key_instead_of_private() -> None:
    with pytest.raises(RemoteError, match="holds a public key"):
        load_key(config(ED25519.export_public_key("openssh").decode()))


def test_truncated_paste() -> None:
    text = ED25519.export_private_key("openssh").decode()
    with pytest.raises(RemoteError, match="truncated: its END line is missing"):
        load_key(config(text[: len(text) // 2]))


def test_mangled_body() -> None:
    lines = ED25519.export_private_key("openssh").decode().splitlines()
    lines[2] = lines[2][:10]
    with pytest.raises(RemoteError, match="could not be parsed"):
        load_key(config("\n".join(lines)))


def test_not_a_key_at_all() -> None:
    with pytest.raises(RemoteError, match="is not a private key"):
        load_key(config("${{ secrets.DEPLOY_KEY }}"))


def test_connect_failures_are_named() -> None:
    assert connect_reason(socket.gaierror(-2, "Name or service not known")).startswith("cannot resolve the host name")
    assert connect_reason(ConnectionRefusedError()) == "connection refused"
    assert connect_reason(TimeoutError()) == "timed out"


def test_a_pin_is_honoured_whatever_other_host_keys_the_server_offers() -> None:
    """known-hosts: asyncssh offers the algorithms of the lines for this host (as OpenSSH does), never
    its default list, which puts RSA first. Fingerprints: one key kind a connection, ed25519 first."""
    line = f"[h.example.com]:22 {ED25519.export_public_key().decode().strip()}"
    base = {spec.name: spec.default for spec in INPUTS}
    base.update(
        {"host": "h.example.com", "username": "deploy", "key": ED25519.export_private_key().decode(), "ref": "main"}
    )
    base.update(
        {"app-dir": "/srv/app", "blue-health-urls": "http://127.0.0.1:1/", "green-health-urls": "http://127.0.0.1:2/"}
    )
    by_line = host_key_plans(load_config({**base, "known-hosts": line}))
    assert len(by_line) == 1 and by_line[0][1] == ()
    by_fingerprint = host_key_plans(load_config({**base, "fingerprint": "SHA256:" + "A" * 43}))
    assert [algs[0] for _, algs in by_fingerprint] == [
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "rsa-sha2-512",
        "ssh-ed448",
    ]
    assert host_key_plans(load_config({**base, "insecure-skip-host-key-check": "true"})) == [(None, ())]
