"""The remote executor against a real SSH server on 127.0.0.1 (asyncssh's, in this process) whose
sessions run their command line with sh, as sshd does: output that is not UTF-8 costs nothing, empty
input still ends, and a cancelled command is stopped on the host before the caller goes on."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest

from bluegreen import commands
from bluegreen.config import PROBE_SECONDS, load_config
from bluegreen.errors import LockLost
from bluegreen.remote import Remote, RemoteError, dial

from .test_config import raw

# asyncssh's server side leaves a queue join unawaited when its redirect is torn down with the session
pytestmark = pytest.mark.filterwarnings("ignore:coroutine 'Queue.join' was never awaited:RuntimeWarning")


@pytest.fixture(autouse=True)
def collect_the_servers_leftovers() -> Iterator[None]:
    """Collect them while the filter above applies, not in whichever test runs next."""
    yield
    gc.collect()


async def run_with_sh(process: asyncssh.SSHServerProcess[bytes]) -> None:
    command = process.command or ""
    shell = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdin, stdout, stderr = shell.stdin, shell.stdout, shell.stderr
    assert stdin and stdout and stderr

    async def feed() -> None:
        """The client's stdin to the shell's, as sshd passes it: a shell that exits without reading
        it (a refused command) costs a broken pipe here, never the session's exit status."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while data := await process.stdin.read(65536):
                stdin.write(data)
                await stdin.drain()
            stdin.close()

    async def copy(source: asyncio.StreamReader, to: asyncssh.SSHWriter[bytes]) -> None:
        while data := await source.read(65536):
            to.write(data)

    feeding = asyncio.create_task(feed())
    await asyncio.gather(copy(stdout, process.stdout), copy(stderr, process.stderr))
    status = await shell.wait()
    feeding.cancel()
    process.exit(status)


class Open(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # the lab's sshd checks keys; this one only carries commands


@contextlib.asynccontextmanager
async def host() -> AsyncIterator[Remote]:
    server = await asyncssh.create_server(
        Open,
        "127.0.0.1",
        0,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        process_factory=run_with_sh,
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    conn = await asyncssh.connect(
        "127.0.0.1", port, known_hosts=None, username="deploy", client_keys=None, agent_path=None, config=None
    )
    try:
        yield Remote(conn, "127.0.0.1")
    finally:
        conn.close()
        await conn.wait_closed()
        server.close()
        await server.wait_closed()


def test_output_that_is_not_utf8_is_decoded_leniently_and_the_connection_lives_on() -> None:
    async def go() -> tuple[str, bytes, str]:
        async with host() as remote:
            odd = await remote.run(["printf", "caf\\351 \\377"])
            after = await remote.run(["echo", "still here"])
            return odd.stdout, odd.raw, after.stdout

    text, raw, after = asyncio.run(go())
    assert raw == b"caf\xe9 \xff" and text == "caf\ufffd \ufffd" and after == "still here\n"


def test_empty_input_still_ends_the_commands_input() -> None:
    async def go() -> str:
        async with host() as remote:
            return (await asyncio.wait_for(remote.run(["cat"], input=""), 10)).stdout

    assert asyncio.run(go()) == ""


def test_a_cancelled_command_is_stopped_on_the_host_before_the_caller_goes_on(tmp_path: Path) -> None:
    """As a cancelled `compose up` must be, before the recovery removes what it was creating."""
    pid_file = tmp_path / "pid"

    async def go() -> bool:
        async with host() as remote:
            task = asyncio.create_task(remote.run(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 60"], timeout=120))
            while not pid_file.exists() or not pid_file.read_text().strip():
                await asyncio.sleep(0.05)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            pid = int(pid_file.read_text())
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True  # gone by the time run() let the caller go on
            return False

    assert asyncio.run(go())


def test_a_run_that_lost_its_lock_sends_nothing_more_and_a_refused_command_is_a_lost_lock(tmp_path: Path) -> None:
    """Through a real SSH session and the real holder script: commands run while the holder holds;
    once the host refuses one (the holder is gone), or the run's watcher says the lock may have
    lapsed, every later call raises LockLost without reaching the host."""
    marker = tmp_path / "ran"

    async def go() -> list[str]:
        seen = []
        async with host() as remote:
            holder = await remote.start(commands.hold_lock(str(tmp_path), 1))  # no beat: it lapses in 1 s
            word, _, token = (await holder.first_line()).partition(" ")
            assert word == "locked"
            lapse = [""]
            remote.tie_to(commands.Holder(str(tmp_path), token), lambda: lapse[0])
            assert (await remote.run(["cat"], input="ok")).stdout == "ok"
            lapse[0] = "the runner was silent for 61s"
            with pytest.raises(LockLost, match="the runner was silent for 61s") as lost:
                await remote.run(["touch", str(marker)])
            seen.append(str(lost.value))
            remote.lost_lock, lapse[0] = "", ""
            while (tmp_path / "holder").exists():  # the holder removes its name as it lets go
                await asyncio.sleep(0.05)
            with pytest.raises(LockLost, match="its holder of the lock is gone") as refused:
                await remote.run(["sh", "-c", 'cat > "$0"', str(marker)], input="x")
            seen.append(str(refused.value))
            with pytest.raises(LockLost):
                await remote.run(["true"])  # not even sent: the run knows it lost the lock
        return seen

    seen = asyncio.run(go())
    assert not marker.exists()
    assert all(s.startswith(f"lost the deploy lock on {tmp_path.parent}: ") for s in seen), seen


@contextlib.contextmanager
def ssh_agent(tmp_path: Path, *keys: asyncssh.SSHKey) -> Iterator[str]:
    """A real ssh-agent holding `keys` (added with ssh-add); its socket."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        for number, key in enumerate(keys):
            path = tmp_path / f"key{number}"
            key.write_private_key(str(path))
            path.chmod(0o600)
            subprocess.run(["ssh-add", "-q", str(path)], env={"SSH_AUTH_SOCK": str(sock)}, check=True)
            path.unlink()
        yield str(sock)
    finally:
        agent.terminate()
        agent.wait()


class KeysOnly(asyncssh.SSHServer):
    """Logs in the holder of one key, and nobody else."""

    def __init__(self, allowed: asyncssh.SSHKey) -> None:
        self.allowed = allowed

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return key.public_data == self.allowed.public_data


def test_the_cli_ssh_agent_signs_the_login_and_the_key_never_leaves_it(tmp_path: Path) -> None:
    """--ssh-agent: the agent's key logs in (no key text in the config at all); an agent without the
    key, or with none, is refused with what to do."""
    deploy_key, other = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    host_key = asyncssh.generate_private_key("ssh-ed25519")

    async def go(sock: str) -> str:
        server = await asyncssh.create_server(
            lambda: KeysOnly(deploy_key),
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            process_factory=run_with_sh,
            encoding=None,
        )
        port = server.sockets[0].getsockname()[1]
        pin = f"[127.0.0.1]:{port} " + host_key.export_public_key().decode().strip()
        values = raw(host="127.0.0.1", port=str(port), key="", fingerprint="", **{"known-hosts": pin})
        config = load_config(values, agent_path=sock)
        try:
            conn = await dial(config)
            try:
                return (await Remote(conn, "127.0.0.1").run(["echo", "in"])).stdout
            finally:
                conn.close()
        finally:
            server.close()

    with ssh_agent(tmp_path, deploy_key) as sock:
        assert asyncio.run(go(sock)) == "in\n"
    with ssh_agent(tmp_path, other) as sock, pytest.raises(RemoteError, match="authentication refused"):
        asyncio.run(go(sock))
    with ssh_agent(tmp_path) as sock, pytest.raises(RemoteError, match="the ssh-agent holds no key"):
        asyncio.run(go(sock))


def test_a_forward_the_server_is_still_connecting_counts_as_allowed_within_the_probe_deadline() -> None:
    """sshd confirms a forward only once its own connect ends, minutes later for an address that drops
    packets: the health gate's deadline must not wait on it."""

    class Connecting:
        async def open_connection(self, host: str, port: int) -> object:
            await asyncio.sleep(3600)
            raise AssertionError("never reached")

    remote = Remote(Connecting(), "127.0.0.1")  # type: ignore[arg-type]
    started = time.monotonic()
    assert asyncio.run(remote.can_forward("203.0.113.7", 80))
    assert time.monotonic() - started < PROBE_SECONDS + 2
