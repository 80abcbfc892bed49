"""Workflow commands, in their one canonical form: `::name::message`, or with properties
`::name key=value,key=value::message`. This module alone formats them.

GitHub's runner also reads `::name ::message`, which github-action-utils prints for a command without
properties; nektos/act and the Gitea and Forgejo runners built on it do not. There such a mask is
shown as plain text, with the secret in it, and a stop-commands block does not stop anything.
github-action-utils keeps what it does right: the file commands (step outputs, the job summary).
"""

from __future__ import annotations

import secrets


def escape_data(text: str) -> str:
    """A command's message: `%`, CR and LF escaped, as the runners unescape them."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A property value: also `:` and `,`, which would end it."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str = "", **properties: str) -> str:
    props = ",".join(f"{key}={escape_property(value)}" for key, value in properties.items())
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


def add_mask(value: str) -> str:
    return command("add-mask", value)


def group(title: str) -> str:
    return command("group", title)


def endgroup() -> str:
    return command("endgroup")


def stop_commands(token: str) -> str:
    """Until `resume_commands(token)`, the runner reads no line as a command."""
    return command("stop-commands", token)


def resume_commands(token: str) -> str:
    return f"::{token}::"


def warning(message: str, title: str) -> str:
    return command("warning", message, title=title)


def error(message: str, title: str) -> str:
    return command("error", message, title=title)


def command_like(line: str) -> bool:
    """Whether the runner could read a line as a command: `::` first once leading white space is
    trimmed (its TrimStart; Python's white space covers .NET's), or the legacy `##[` anywhere."""
    return line.lstrip().startswith("::") or "##[" in line


def guarded(text: str, always: bool = False) -> list[str]:
    """The lines to print for `text` so that none of it acts as a workflow command: the text as it
    is when no line of it (split wherever the runner splits, and finer) is command-like; otherwise,
    or `always`, the text between stop-commands markers with a fresh random token."""
    if not always and not any(command_like(line) for line in text.splitlines()):
        return [text]
    token = secrets.token_hex(16)
    return [stop_commands(token), text, resume_commands(token)]
