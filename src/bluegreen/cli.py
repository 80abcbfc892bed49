"""`bluegreen deploy|rollback|status`: the action's engine as a command, for any CI or a laptop.

Flags mirror the action's inputs one to one (`--app-dir` for `app-dir`), each falling back to an
environment variable (`BLUEGREEN_APP_DIR`) and then to the input's default. The input `command` is
the subcommand. The same schema (`config.INPUTS`, `config.load_config`) validates both; nothing is
duplicated."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TextIO

from . import commands
from .canary import Held, held_path
from .config import (
    INPUTS,
    Config,
    ConfigError,
    label,
    load_config,
    missing_inputs,
    secret_values,
    with_settings_file,
)
from .fleet import Fleet, deploy_with_signals
from .journal import STATE_DIR, Journal
from .lock import RunInfo, lock_status
from .nginx import Nginx, NginxError, config_sections, live_color
from .plan import plan_fleet
from .remote import Remote, RemoteError, encrypted
from .report import EXIT_FAILED, EXIT_USAGE, ConsoleReporter
from .stacks import STACKS, Stacks, by_stack, read_files
from .sync import Checkout

# The flags in --help, grouped by purpose (every input is in one group; test_cli checks it).
HELP_GROUPS = {
    "connection": (
        "host", "port", "username", "key", "passphrase", "known-hosts", "fingerprint",
        "insecure-skip-host-key-check", "connect-timeout", "connect-retries", "proxy-jump", "proxy-key",
        "proxy-known-hosts",
    ),
    "what to deploy": ("config", "app-dir", "ref", "plan", "host-changes", "env", "vars", "lock-timeout"),
    "compose and nginx": (
        "project-name", "base-compose-file", "compose-file", "upstream-file", "upstream-target", "nginx-container",
        "nginx-sudo",
    ),
    "checks": (
        "blue-health-urls", "green-health-urls", "health-timeout", "health-interval", "public-url",
        "public-url-status", "public-url-insecure", "host-url", "pre-switch-command", "pre-switch-timeout",
    ),
    "images": ("build", "pull", "registry", "registry-username", "registry-password"),
    "the switch and after": ("drain-timeout", "keep-previous", "prune"),
    "canary": ("strategy", "canary-steps", "canary-hold", "canary-sticky", "canary-max-5xx", "canary-min-requests"),
    "several hosts": ("batch-size", "on-host-failure", "lb-detach-command", "lb-attach-command", "lb-timeout"),
}  # fmt: skip

# Flags that read an input's text from a file, so that it stays off the command line: flag -> (input, help).
FILE_FLAGS = {
    "key-file": ("key", "read the private key from this file instead of --key (it stays in memory)"),
    "env-file": ("env", "read env (the app's secrets, dotenv lines) from this file instead of --env"),
    "known-hosts-file": ("known-hosts", "read known-hosts from this file, e.g. ~/.ssh/known_hosts"),
    "proxy-key-file": ("proxy-key", "read proxy-key (the bastion's private key) from this file instead of --proxy-key"),
    "registry-password-file": (
        "registry-password",
        "read registry-password from this file instead of --registry-password",
    ),
}


def env_name(input_name: str) -> str:
    return "BLUEGREEN_" + input_name.upper().replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bluegreen", description="Zero-downtime blue-green deploys of a docker-compose app behind nginx, over SSH."
    )
    parser.add_argument("--version", action="version", version=f"bluegreen {metadata.version('bluegreen-action')}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("deploy", "deploy a ref to the idle color and switch nginx to it"),
        ("rollback", "switch back to the previous color, at the commit it last ran, with no build"),
        ("promote", "finish a held canary: switch every request to its new color, drain and retire the old"),
        ("abort", "end a held canary: switch every request back to the old color and remove the new one"),
        ("plan", "show what a deploy of a ref would do; nothing on the host changes (not the lock, not the journal)"),
        ("status", "show the live color, the stacks and the last deploys"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        groups = {title: sub.add_argument_group(title) for title in HELP_GROUPS}
        for spec in INPUTS:
            if spec.name == "command":
                continue
            group = next((groups[title] for title, names in HELP_GROUPS.items() if spec.name in names), sub)
            default = "required" if spec.required else f"default {spec.default!r}"
            boolean = spec.default in ("true", "false")  # a bare --prune means --prune true
            group.add_argument(
                f"--{spec.name}",
                dest=spec.name,
                metavar="true|false" if boolean else "VALUE",
                nargs="?" if boolean else None,
                const="true" if boolean else None,
                help=f"{spec.description} [env {env_name(spec.name)}; {default}]".replace("%", "%%"),  # %-formatted
            )
        for flag, (_, help_text) in FILE_FLAGS.items():
            groups["connection"].add_argument(f"--{flag}", metavar="PATH", help=help_text)
        groups["connection"].add_argument(
            "--ssh-agent",
            action="store_true",
            help="sign the login with the keys of the running ssh-agent (SSH_AUTH_SOCK) instead of --key: the "
            "private key never leaves the agent",
        )
    return parser


def raw_inputs(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, str]:
    values = vars(args)
    raw = {}
    for spec in INPUTS:
        value = values.get(spec.name)
        raw[spec.name] = value if value is not None else environ.get(env_name(spec.name), spec.default)
    raw["command"] = args.command if args.command in ("deploy", "rollback", "promote", "abort") else "deploy"
    if args.command == "plan":
        raw["plan"] = "true"
    raw["ref"] = raw["ref"] or environ.get("GITHUB_SHA", "")  # as the action's ref does, in any CI that sets it
    for flag, (name, _) in FILE_FLAGS.items():
        if (path := getattr(args, flag.replace("-", "_"))) and values.get(name) is not None:
            raise ConfigError(flag, f"is given with --{name} too", f"give one of --{flag} and --{name}")
        if path:
            try:
                raw[name] = Path(path).expanduser().read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                reason = err.strerror if isinstance(err, OSError) and err.strerror else "it is not UTF-8 text"
                raise ConfigError(
                    flag, f"{path} cannot be read ({reason})", f"give the path of the {name} file"
                ) from None
    return raw


def ssh_agent(args: argparse.Namespace, raw: Mapping[str, str], environ: Mapping[str, str]) -> str:
    """With --ssh-agent, the agent's socket ("" without it)."""
    if not args.ssh_agent:
        return ""
    if raw.get("key", "").strip():
        raise ConfigError("ssh-agent", "is given with a key too", "give --ssh-agent or --key-file, not both")
    if not (path := environ.get("SSH_AUTH_SOCK", "")):
        raise ConfigError(
            "ssh-agent", "SSH_AUTH_SOCK is not set", "start ssh-agent and ssh-add the key, or give --key-file"
        )
    return path


def ask_passphrase(raw: dict[str, str], stdin: TextIO, ask: Callable[[str], str] = getpass.getpass) -> None:
    """On a terminal, an encrypted key without --passphrase is asked for, never echoed (a pipe or a CI
    gets the usual error instead)."""
    if not raw.get("passphrase") and stdin.isatty() and encrypted(raw.get("key", "")):
        raw["passphrase"] = ask("Passphrase for the key: ")


async def host_status(config: Config) -> dict[str, object]:
    """What runs on the host: the live color per nginx, .active_env, each stack's containers (as the
    checked-out compose files define them), the last deploys."""
    remote = await Remote.connect(config)
    try:
        proxy = Nginx(remote, config.nginx_container, config.upstream_target_path, config.nginx_sudo)
        await proxy.check_available()
        stacks = Stacks(remote, config, lambda _: None)
        names = {stack: config.stack_file(stack) for stack in STACKS}
        paths = (
            config.upstream_path("blue"),
            config.upstream_path("green"),
            config.app_path(".active_env"),
            held_path(config),
        )
        dump, (blue, green, active_env, held_text), texts, containers, recent = await asyncio.gather(
            proxy.dump(),
            asyncio.gather(*(remote.run(commands.read_file(path), check=False) for path in paths)),
            Checkout(remote, config).read_disk(list(names.values())),
            stacks.containers(),
            Journal(remote, config.app_dir).tail(5),
        )
        lock = await lock_status(remote, config.app_path(STATE_DIR))  # after: sshd allows 10 sessions at once
    finally:
        await remote.close()
    stacks.use_files(read_files(by_stack(texts, names), names, strict=False))
    held = Held.parse(held_text.stdout)
    live = live_color(dump, {"blue": blue.stdout, "green": green.stdout})
    canary: dict[str, object] = {}
    if held is not None and held.serves(config_sections(dump)):
        live = held.live
        canary = {"held": f"{held.share}%", "from": held.live, "to": held.target, "ref": held.ref, "since": held.since}
    elif held is not None and live != held.target:  # not promoted: an abort that did not finish, or a hand edit
        canary = {"unfinished": f"nginx no longer serves the split of {held.ref}: finish it with command: abort"}
    return {
        "live-color": live or "",
        **({"canary": canary} if canary else {}),
        "active-env": active_env.stdout.strip(),
        "containers": {
            stack: sorted(
                f"{c.name} ({'running' if c.running else 'stopped'})" for c in stacks.layout.members(containers, stack)
            )
            for stack in STACKS
            if names[stack]
        },
        "lock": lock,
        "recent-deploys": list(reversed(recent)),
    }


async def fleet_status(config: Config) -> dict[str, object]:
    """One host's status; with several, each host's, keyed by host."""
    if len(config.hosts) == 1:
        return await host_status(config)
    found = await asyncio.gather(*(host_status(config.for_host(i)) for i in range(len(config.hosts))))
    return {label(host, port): status for (host, port), status in zip(config.hosts, found, strict=True)}


def flag_for(name: str) -> str:
    """A missing input as the CLI takes it: its flag, and its environment variable."""
    return {
        "key": "--key-file PATH (or --key, BLUEGREEN_KEY)",
        "known-hosts": "--fingerprint or --known-hosts, the host key pin (or BLUEGREEN_FINGERPRINT, "
        "BLUEGREEN_KNOWN_HOSTS; --insecure-skip-host-key-check to go without)",
        "ref": "--ref, a commit, branch or tag (or BLUEGREEN_REF, GITHUB_SHA)",
    }.get(name, f"--{name} (or {env_name(name)})")


def flag_words(err: ConfigError) -> str:
    """An input's error as the CLI says it: --app-dir for the input app-dir."""
    return str(err).replace("input '", "--", 1).replace("':", ":", 1)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        raw = with_settings_file(raw_inputs(args, os.environ), Path.cwd())
    except ConfigError as err:
        ConsoleReporter([]).error(flag_words(err), "invalid option")
        return EXIT_USAGE
    try:
        agent = ssh_agent(args, raw, os.environ)
    except ConfigError as err:
        ConsoleReporter([]).error(flag_words(err), "invalid option")
        return EXIT_USAGE
    out = ConsoleReporter(secret_values(raw))
    if missing := missing_inputs(raw, for_deploy=args.command != "status", agent=bool(agent)):
        out.error("missing: " + "; ".join(flag_for(name) for name in missing), "missing options")
        return EXIT_USAGE
    ask_passphrase(raw, sys.stdin)
    out = ConsoleReporter(secret_values(raw))  # the passphrase too, if one was asked for
    try:
        config = load_config(raw, for_deploy=args.command != "status", agent_path=agent)
    except ConfigError as err:
        out.error(flag_words(err), "invalid option")
        return EXIT_USAGE
    if args.command == "status":
        try:
            status = asyncio.run(fleet_status(config))
        except (RemoteError, NginxError) as err:
            out.error(str(err), "status")
            return EXIT_FAILED
        out.emit(json.dumps(status, indent=2))
        return 0
    if config.plan:
        return asyncio.run(plan_fleet(config, out))
    report = asyncio.run(deploy_with_signals(Fleet(config, out, RunInfo.from_env(os.environ))))
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
