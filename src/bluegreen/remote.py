"""The remote executor: one pinned asyncssh connection; argv in, (status, stdout, stderr) out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncssh

from .commands import shell_line
from .config import Config
from .errors import DeployError

DEFAULT_COMMAND_TIMEOUT = 120


class RemoteError(RuntimeError):
    """A failure talking to the host: carries a one-line cause and its fix."""

    def __init__(self, message: str, fix: str) -> None:
        self.fix = fix
        super().__init__(message)


class CommandFailed(RuntimeError):
    def __init__(self, argv: Sequence[str], status: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"`{shell_line(argv)}` exited with status {status}: {last_line(stderr or stdout)}")


@dataclass(frozen=True)
class Result:
    status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == 0


class Held:
    """A remote command kept running, its stdin open, until released (or the session ends)."""

    def __init__(self, process: asyncssh.SSHClientProcess[str]) -> None:
        self.process = process

    async def first_line(self) -> str:
        return str(await self.process.stdout.readline()).strip()

    def release(self) -> None:
        self.process.stdin.write_eof()
        self.process.close()


class Holding(Protocol):
    async def first_line(self) -> str: ...

    def release(self) -> None: ...


class Host(Protocol):
    """What the step modules need of the host: run a command; start one and keep it running."""

    async def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: int = ..., check: bool = True
    ) -> Result: ...

    async def start(self, argv: Sequence[str], timeout: int) -> Holding: ...


async def checked(host: Host, argv: Sequence[str], what: str, fix: str, timeout: int = DEFAULT_COMMAND_TIMEOUT) -> str:
    """Run a command that must succeed; a failure becomes a DeployError naming `what` and the fix."""
    try:
        result = await host.run(argv, timeout=timeout)
    except CommandFailed as err:
        raise DeployError(f"{what} failed: {err}", fix, err.stderr or err.stdout, what) from None
    return result.stdout


def load_key(config: Config) -> asyncssh.SSHKey:
    """Parse the private key in memory; each kind of bad paste gets its own message."""
    text = config.key.strip()
    if "PRIVATE KEY" not in text:
        if text.startswith(("ssh-", "ecdsa-", "sk-")) or "PUBLIC KEY" in text:
            raise RemoteError(
                "input 'key' holds a public key",
                "paste the private key (the file without .pub), including its BEGIN and END lines",
            )
        raise RemoteError(
            "input 'key' is not a private key",
            "paste the whole private key, from -----BEGIN ... PRIVATE KEY----- to its END line",
        )
    if "-----END" not in text:
        raise RemoteError(
            "input 'key' is truncated: its END line is missing",
            "paste the whole private key, including the -----END ... PRIVATE KEY----- line",
        )
    try:
        return asyncssh.import_private_key(text + "\n", config.passphrase or None)
    except asyncssh.KeyEncryptionError:
        if config.passphrase:
            raise RemoteError(
                "input 'passphrase' does not decrypt the key", "set passphrase to the key's passphrase"
            ) from None
        raise _encrypted_without_passphrase() from None
    except asyncssh.KeyImportError as err:
        if not config.passphrase and "Passphrase must be specified" in str(err):
            raise _encrypted_without_passphrase() from None
        raise RemoteError(
            f"input 'key' could not be parsed ({err})",
            "paste the private key unchanged: every line, no extra indentation, OpenSSH, PEM or PKCS#8",
        ) from None


def _encrypted_without_passphrase() -> RemoteError:
    return RemoteError("input 'key' is encrypted and no passphrase was given", "set the passphrase input from a secret")


class _PinningClient(asyncssh.SSHClient):
    """Accepts the host key only if its SHA256 fingerprint is pinned; records what was presented."""

    def __init__(self, pins: Sequence[str]) -> None:
        self.pins = set(pins)
        self.presented: str = ""

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.presented = key.get_fingerprint("sha256")
        return self.presented in self.pins


class Remote:
    def __init__(self, conn: asyncssh.SSHClientConnection, host: str) -> None:
        self.conn = conn
        self.host = host

    @classmethod
    async def connect(cls, config: Config) -> Remote:
        key = load_key(config)
        client = _PinningClient(config.fingerprints)
        known_hosts: object
        if config.insecure_skip_host_key_check:
            known_hosts = None
        elif config.known_hosts:
            try:
                known_hosts = asyncssh.import_known_hosts(config.known_hosts)
            except ValueError as err:
                raise RemoteError(
                    f"input 'known-hosts' could not be parsed ({err})",
                    "give lines as printed by ssh-keyscan -p PORT HOST",
                ) from None
        else:
            known_hosts = asyncssh.import_known_hosts("")
        delay = 1.0
        attempts = config.connect_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                conn = await asyncio.wait_for(
                    asyncssh.connect(
                        config.host,
                        config.port,
                        username=config.username,
                        client_keys=[key],
                        known_hosts=known_hosts,
                        client_factory=lambda: client,
                        server_host_key_algs="default",
                        agent_path=None,
                        config=None,
                        keepalive_interval=10,
                        keepalive_count_max=3,
                    ),
                    config.connect_timeout,
                )
                return cls(conn, config.host)
            except asyncssh.HostKeyNotVerifiable:
                raise RemoteError(
                    f"host key mismatch for {config.host}:{config.port}: the server presented "
                    f"{client.presented or 'an unknown key'}",
                    f"if the host key really is this one, pin it: set fingerprint to {client.presented} (or "
                    f"known-hosts to the output of 'ssh-keyscan -p {config.port} {config.host}')",
                ) from None
            except asyncssh.PermissionDenied:
                raise RemoteError(
                    f"authentication refused for {config.username}@{config.host}:{config.port}",
                    f"add the key's public half to ~{config.username}/.ssh/authorized_keys on the host, and check "
                    "username",
                ) from None
            except (TimeoutError, OSError, asyncssh.DisconnectError) as err:
                reason = connect_reason(err)
                if attempt == attempts or "resolve" in reason:
                    raise RemoteError(
                        f"cannot reach {config.host}:{config.port} ({reason})",
                        "check host and port, that sshd runs there, and that the firewall lets the runner in",
                    ) from None
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: int = DEFAULT_COMMAND_TIMEOUT,
        check: bool = True,
    ) -> Result:
        try:
            done = await self.conn.run(shell_line(argv, timeout, tied=input is None), input=input, timeout=timeout + 15)
        except asyncssh.TimeoutError:
            raise CommandFailed(argv, 124, "", f"timed out after {timeout}s") from None
        except (asyncssh.Error, OSError) as err:
            raise RemoteError(
                f"lost the connection to {self.host} ({err})", "check the host's network and sshd; then rerun the job"
            ) from None
        status = done.exit_status if done.exit_status is not None else 255
        result = Result(status, _text(done.stdout), _text(done.stderr))
        if check and not result.ok:
            raise CommandFailed(argv, result.status, result.stdout, result.stderr)
        return result

    async def start(self, argv: Sequence[str], timeout: int) -> Held:
        return Held(await self.conn.create_process(shell_line(argv, timeout)))

    async def can_forward(self, host: str, port: int) -> bool:
        """True unless the server refuses TCP forwarding (a refused connection still means forwarding works)."""
        try:
            _, writer = await self.conn.open_connection(host, port)
        except asyncssh.ChannelOpenError as err:
            return err.code != asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
        writer.close()
        return True

    @contextlib.asynccontextmanager
    async def forward(self, host: str, port: int) -> AsyncIterator[int]:
        """A local 127.0.0.1 port tunnelled to host:port as seen from the server."""
        listener = await self.conn.forward_local_port("127.0.0.1", 0, host, port)
        try:
            yield listener.get_port()
        finally:
            listener.close()

    async def close(self) -> None:
        self.conn.close()
        with contextlib.suppress(Exception):
            await self.conn.wait_closed()


def last_line(text: str) -> str:
    """The line of command output that says most: the last error-looking line, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    failing = [line for line in lines if any(word in line.lower() for word in ("emerg", "error", "failed", "denied"))]
    return (failing or lines or ["no output"])[-1]


def _text(data: object) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data or "")


def connect_reason(err: BaseException) -> str:
    """The cause of a failed connect, in words (DNS failures named as such)."""
    if isinstance(err, asyncio.TimeoutError):
        return "timed out"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    text = str(err) or type(err).__name__
    if (
        "Name or service not known" in text
        or "nodename nor servname" in text
        or "Temporary failure in name resolution" in text
    ):
        return f"cannot resolve the host name: {text}"
    return text
