"""The remote executor: one pinned asyncssh connection; argv in, (status, stdout, stderr) out."""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NoReturn, Protocol

import asyncssh
from asyncssh.public_key import get_default_public_key_algs

from .commands import LOCK_LOST_MARK, LOCK_LOST_STATUS, Holder, shell_line
from .config import CANCEL_GRACE_SECONDS, CLIENT_SLACK_SECONDS, COMMAND_SECONDS, PROBE_SECONDS, Config
from .errors import DeployError, LockLost


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
    raw: bytes = b""  # stdout as the host wrote it (sync.parse_blobs needs its exact bytes)

    @property
    def ok(self) -> bool:
        return self.status == 0


class Held:
    """A remote command kept running, its stdin open, until released (or the session ends)."""

    def __init__(self, process: asyncssh.SSHClientProcess[str]) -> None:
        self.process = process

    async def first_line(self) -> str:
        return str(await self.process.stdout.readline()).strip()

    def beat(self) -> None:
        """Tell the host this end is alive (a line on the command's stdin)."""
        if not self.process.stdin.is_closing():
            self.process.stdin.write("\n")

    def exited(self) -> bool:
        """The command ended on the host and said so (not merely a connection that dropped)."""
        return self.process.exit_status is not None

    def release(self) -> None:
        self.process.stdin.write_eof()
        self.process.close()


class Holding(Protocol):
    async def first_line(self) -> str: ...

    def beat(self) -> None: ...

    def exited(self) -> bool: ...

    def release(self) -> None: ...


class Host(Protocol):
    """What the step modules need of the host: run a command; start one and keep it running."""

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: int = ...,
        check: bool = True,
        hold_stdin: bool = False,
    ) -> Result: ...

    async def start(self, argv: Sequence[str]) -> Holding: ...

    def tie_to(self, holder: Holder | None, lapse: Callable[[], str] | None = None) -> None: ...


async def checked(host: Host, argv: Sequence[str], what: str, fix: str, timeout: int = COMMAND_SECONDS) -> str:
    """Run a command that must succeed; a failure becomes a DeployError naming `what` and the fix."""
    try:
        result = await host.run(argv, timeout=timeout)
    except CommandFailed as err:
        output = "\n".join(part.rstrip() for part in (err.stdout, err.stderr) if part.strip())
        raise DeployError(f"{what} failed: {err}", fix, output, what) from None
    return result.stdout


def load_key(config: Config) -> asyncssh.SSHKey:
    """Parse the private key in memory; each kind of bad paste gets its own message."""
    text, name = config.key.strip(), config.key_input
    if "PRIVATE KEY" not in text:
        if text.startswith(("ssh-", "ecdsa-", "sk-")) or "PUBLIC KEY" in text:
            raise RemoteError(
                f"input '{name}' holds a public key",
                "paste the private key (the file without .pub), including its BEGIN and END lines",
            )
        raise RemoteError(
            f"input '{name}' is not a private key",
            "paste the whole private key, from -----BEGIN ... PRIVATE KEY----- to its END line",
        )
    if "-----END" not in text:
        raise RemoteError(
            f"input '{name}' is truncated: its END line is missing",
            "paste the whole private key, including the -----END ... PRIVATE KEY----- line",
        )
    try:
        return asyncssh.import_private_key(text + "\n", config.passphrase or None)
    except asyncssh.KeyEncryptionError:
        if config.passphrase:
            raise RemoteError(
                "input 'passphrase' does not decrypt the key", "set passphrase to the key's passphrase"
            ) from None
        raise _encrypted_without_passphrase(name) from None
    except asyncssh.KeyImportError as err:
        if not config.passphrase and "Passphrase must be specified" in str(err):
            raise _encrypted_without_passphrase(name) from None
        raise RemoteError(
            f"input '{name}' could not be parsed ({err})",
            "paste the private key unchanged: every line, no extra indentation, OpenSSH, PEM or PKCS#8",
        ) from None


def encrypted(text: str) -> bool:
    """Whether private key `text` needs a passphrase (False for anything else, a bad paste too)."""
    try:
        asyncssh.import_private_key(text.strip() + "\n")
    except asyncssh.KeyEncryptionError:
        return True
    except asyncssh.KeyImportError as err:
        return "Passphrase must be specified" in str(err)
    except ValueError:
        return False
    return False


def _encrypted_without_passphrase(name: str) -> RemoteError:
    return RemoteError(
        f"input '{name}' is encrypted and no passphrase was given", "set the passphrase input from a secret"
    )


class _PinningClient(asyncssh.SSHClient):
    """Accepts the host key only if its SHA256 fingerprint is pinned; records what was presented."""

    def __init__(self, pins: Sequence[str]) -> None:
        self.pins = set(pins)
        self.presented: str = ""

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.presented = key.get_fingerprint("sha256")
        return self.presented in self.pins


# Host key algorithms by key type, in the order a pin by fingerprint tries them: one connection each,
# until the server presents a pinned key. The server picks the first algorithm of the client's list it
# has, so offering every kind at once (asyncssh prefers RSA) gets a key the pin may not name.
KEY_KINDS: tuple[tuple[str, ...], ...] = (
    ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"),
    ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "sk-ecdsa-sha2-nistp256@openssh.com"),
    ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
    ("ssh-ed448",),
)

Plan = tuple[object, Sequence[str]]  # (known_hosts for asyncssh, server_host_key_algs)


def host_key_plans(config: Config) -> list[Plan]:
    """How to connect so that any one pinned key is accepted, whatever other keys the server has:
    with known-hosts, asyncssh offers the algorithms of the lines that match the host (as OpenSSH
    does); with fingerprints, one key kind at a time. Without a pin, anything (insecure)."""
    if config.insecure_skip_host_key_check:
        return [(None, ())]
    plans: list[Plan] = []
    if config.known_hosts:
        try:
            plans.append((asyncssh.import_known_hosts(config.known_hosts), ()))
        except ValueError as err:
            raise RemoteError(
                f"input 'known-hosts' could not be parsed ({err})", "give lines as printed by ssh-keyscan -p PORT HOST"
            ) from None
    if config.fingerprints:
        supported = {alg.decode() for alg in get_default_public_key_algs()}
        none_known = asyncssh.import_known_hosts("")
        for kind in KEY_KINDS:
            if algs := [alg for alg in kind if alg in supported]:
                plans.append((none_known, algs))
    return plans


def host_key_mismatch(config: Config, presented: Sequence[str]) -> RemoteError:
    shown = ", ".join(p for p in dict.fromkeys(presented) if p)
    where = f"{config.host}:{config.port}"
    if not shown:
        return RemoteError(
            f"host key mismatch for {where}: the server offers no host key of a kind the pins name",
            f"pin the host key as 'ssh-keyscan -p {config.port} {config.host}' prints it (known-hosts)",
        )
    return RemoteError(
        f"host key mismatch for {where}: the server presented {shown}",
        f"if the host key really is this one, pin it: set fingerprint to {shown.split(', ')[0]} (or known-hosts "
        f"to the output of 'ssh-keyscan -p {config.port} {config.host}')",
    )


async def dial(config: Config, tunnel: asyncssh.SSHClientConnection | None = None) -> asyncssh.SSHClientConnection:
    """One pinned connection to config's host (through `tunnel`, a bastion's connection, if given)."""
    async with signing_keys(config) as keys:
        return await _dial(config, keys, tunnel)


@asynccontextmanager
async def signing_keys(config: Config) -> AsyncIterator[Sequence[asyncssh.SSHKeyPair | asyncssh.SSHKey]]:
    """The keys that sign the login: `key`, parsed in memory; or, with the CLI's --ssh-agent, the
    agent's (the private keys never leave it), open for as long as the connection is being made."""
    if not config.agent_path:
        yield [load_key(config)]
        return
    try:
        agent = await asyncssh.connect_agent(config.agent_path)
    except (OSError, asyncssh.Error) as err:
        raise RemoteError(
            f"cannot reach the ssh-agent at {config.agent_path} ({err})", "start ssh-agent, or give --key-file"
        ) from None
    try:
        keys = await agent.get_keys()
        if not keys:
            raise RemoteError("the ssh-agent holds no key", "add the deploy key to it: ssh-add PATH")
        yield keys
    finally:
        agent.close()
        await agent.wait_closed()


async def _dial(
    config: Config, keys: Sequence[asyncssh.SSHKeyPair | asyncssh.SSHKey], tunnel: asyncssh.SSHClientConnection | None
) -> asyncssh.SSHClientConnection:
    client = _PinningClient(config.fingerprints)
    plans = host_key_plans(config)
    delay = 1.0
    attempts = config.connect_retries + 1
    for attempt in range(1, attempts + 1):
        presented: list[str] = []
        reached = False  # some attempt spoke SSH with the server: a later reset is a kind it lacks
        failure: BaseException | None = None
        try:
            for known_hosts, algs in plans:
                client.presented = ""
                try:
                    conn = await asyncio.wait_for(
                        asyncssh.connect(
                            config.host,
                            config.port,
                            username=config.username,
                            client_keys=keys,
                            known_hosts=known_hosts,
                            client_factory=lambda: client,
                            server_host_key_algs=algs,
                            agent_path=None,
                            config=None,
                            keepalive_interval=10,
                            keepalive_count_max=3,
                            tunnel=tunnel,
                        ),
                        config.connect_timeout,
                    )
                    return conn
                except asyncssh.HostKeyNotVerifiable:
                    presented.append(client.presented)
                    reached = True
                except asyncssh.KeyExchangeFailed:
                    reached = True  # the server has no host key of this kind: try the next
                except (asyncssh.PermissionDenied, TimeoutError):
                    raise  # a silent host stays silent whatever kind is asked for
                except asyncssh.ChannelOpenError:
                    raise  # the bastion could not open the connection: no kind changes that
                except (OSError, asyncssh.DisconnectError) as err:
                    failure = err  # a server without this kind may just hang up: try the next
            if not reached and failure is not None:
                raise failure
            raise host_key_mismatch(config, presented)
        except asyncssh.PermissionDenied:
            raise RemoteError(
                f"authentication refused for {config.username}@{config.host}:{config.port}",
                f"add the key's public half to ~{config.username}/.ssh/authorized_keys on the host, and check username",
            ) from None
        except (TimeoutError, OSError, asyncssh.DisconnectError, asyncssh.ChannelOpenError) as err:
            reason = connect_reason(err)
            if attempt == attempts or "resolve" in reason:
                via = (
                    f" through proxy-jump {(tunnel.get_extra_info('peername') or ('',))[0]}"
                    if tunnel is not None
                    else ""
                )
                raise RemoteError(
                    f"cannot reach {config.host}:{config.port}{via} ({reason})",
                    "check host and port, that sshd runs there, and that the firewall lets "
                    + ("the bastion" if tunnel is not None else "the runner")
                    + " in",
                ) from None
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


class Remote:
    def __init__(
        self, conn: asyncssh.SSHClientConnection, host: str, bastion: asyncssh.SSHClientConnection | None = None
    ) -> None:
        self.conn = conn
        self.host = host
        self.bastion = bastion  # proxy-jump's connection, which carries `conn`
        self.holder: Holder | None = None  # the deploy lock's holder on the host: every command checks it
        self.lapse: Callable[[], str] | None = None  # why the lock may have lapsed ("" while it holds)
        self.lost_lock = ""  # why this run no longer holds the lock: it sends no command from then on

    @classmethod
    async def connect(cls, config: Config) -> Remote:
        """Connect, with the host key pinned (see `host_key_plans`), retrying a network failure
        `connect-retries` times with backoff; with proxy-jump, through the bastion (pinned the same way)."""
        if config.proxy_jump is None:
            return cls(await dial(config), config.host)
        bastion = await dial(config.bastion())
        try:
            return cls(await dial(config, bastion), config.host, bastion)
        except BaseException:
            bastion.close()
            raise

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: int = COMMAND_SECONDS,
        check: bool = True,
        hold_stdin: bool = False,
    ) -> Result:
        """Run argv on the host (host-side `timeout`; without input, tied to this session; once the
        deploy lock is held, only while this run's holder holds it: see commands.GUARD_SCRIPT).
        Output is taken as bytes and decoded leniently: one byte that is not UTF-8 never costs the
        connection. A cancelled call closes its channel, so the command is stopped on the host (its
        watcher sees the end of its input) before the caller goes on. Once the lock is lost (or may
        have lapsed), nothing is sent: LockLost. `hold_stdin`: stdin stays open after `input`, for
        a command that reads its input line and then ties itself to the session (commands.PULL_SCRIPT)."""
        self.check_lock()
        line = shell_line(argv, timeout, tied=input is None, holder=self.holder)
        try:
            process = await self.conn.create_process(line, encoding=None)
        except (asyncssh.Error, OSError) as err:
            raise self.lost(err) from None
        try:
            if input is not None:
                process.stdin.write(input.encode())
                if not hold_stdin:
                    process.stdin.write_eof()
            await asyncio.wait_for(process.wait_closed(), timeout + CLIENT_SLACK_SECONDS)
        except TimeoutError:
            process.close()
            raise CommandFailed(argv, 124, "", f"timed out after {timeout}s") from None
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                process.stdin.write_eof()
                await asyncio.wait_for(process.wait_closed(), CANCEL_GRACE_SECONDS)
            process.close()
            raise
        except (asyncssh.Error, OSError) as err:
            raise self.lost(err) from None
        out, err_out = process.collect_output()
        status = process.exit_status if process.exit_status is not None else 255
        result = Result(status, _text(out), _text(err_out), out if isinstance(out, bytes) else b"")
        if self.holder is not None and status == LOCK_LOST_STATUS and LOCK_LOST_MARK in result.stderr:
            self.lose("the host refused this run's command: its holder of the lock is gone")
        if check and not result.ok:
            raise CommandFailed(argv, result.status, result.stdout, result.stderr)
        return result

    def lost(self, err: BaseException) -> RemoteError:
        return RemoteError(
            f"lost the connection to {self.host} ({err})", "check the host's network and sshd; then rerun the job"
        )

    def tie_to(self, holder: Holder | None, lapse: Callable[[], str] | None = None) -> None:
        """From now on, every command runs only while `holder` holds the deploy lock, and none is sent
        once `lapse` names a reason the lock may have gone."""
        self.holder, self.lapse = holder, lapse

    def check_lock(self) -> None:
        if not self.lost_lock and self.lapse is not None and (reason := self.lapse()):
            self.lost_lock = reason
        if self.lost_lock:
            self.lose(self.lost_lock)

    def lose(self, reason: str) -> NoReturn:
        self.lost_lock = reason
        raise LockLost(posixpath.dirname(self.holder.state_dir) if self.holder else self.host, reason)

    async def start(self, argv: Sequence[str]) -> Held:
        """Start a command that runs until released or until the session ends; no clock stops it."""
        return Held(await self.conn.create_process(shell_line(argv)))

    async def can_forward(self, host: str, port: int) -> bool:
        """True unless the server refuses TCP forwarding (a refused connection still means forwarding works).
        Within PROBE_SECONDS: a server still trying to connect (an address that drops packets) does
        forward, and the health gate's own deadline must not wait on its TCP timeout."""
        try:
            async with asyncio.timeout(PROBE_SECONDS):
                _, writer = await self.conn.open_connection(host, port)
        except TimeoutError:
            return True
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

    @contextlib.asynccontextmanager
    async def reverse_forward(self, port: int) -> AsyncIterator[int]:
        """A port on the host's 127.0.0.1 tunnelled back to 127.0.0.1:port here, on the runner
        (ssh -R); yields the host's port."""
        try:
            listener = await self.conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", port)
        except (asyncssh.Error, OSError) as err:
            raise RemoteError(
                f"{self.host} refused a remote port forward to the runner ({err})",
                "allow it in the host's sshd_config (AllowTcpForwarding yes, or remote), or set build: host",
            ) from None
        try:
            yield listener.get_port()
        finally:
            listener.close()

    async def close(self) -> None:
        for conn in (self.conn, self.bastion):
            if conn is not None:
                conn.close()
                with contextlib.suppress(Exception):
                    await conn.wait_closed()


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
    if isinstance(err, asyncssh.ChannelOpenError):
        return f"the bastion could not connect: {err.reason or err.code}"
    text = str(err) or type(err).__name__
    if (
        "Name or service not known" in text
        or "nodename nor servname" in text
        or "Temporary failure in name resolution" in text
    ):
        return f"cannot resolve the host name: {text}"
    return text
