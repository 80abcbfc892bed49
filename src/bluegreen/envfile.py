"""The `env` input as files on the host, written before the color's build (pure formatting, no I/O).

- `<app-dir>/.bluegreen/<color>.env`: for the color's compose file to name with `env_file:`, in the
  dotenv syntax of the Compose the host has, so that it reads back every value exactly. Compose v2
  (compose-go) reads a single-quoted value literally and a double-quoted one with escapes, `$$` for
  `$`. Compose v1 (python-dotenv) reads single quotes literally too, but expands `${...}` everywhere
  and cannot end a value with a backslash or hold a carriage return: such a value is left out of the
  file on v1 (it still reaches the color through `${NAME}`), and the deploy warns.
- `<app-dir>/.bluegreen/<color>.environ`: the same variables as `export NAME='...'` lines, each
  value quoted with shlex. The action's compose calls for that color source it (commands.LOAD_ENV),
  so `${NAME}` in the compose file is the value, on both Compose versions.

Both are mode 0600 and written from stdin: no value is ever in an argv on the host.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from .commands import ComposeVariant

Pairs = Sequence[tuple[str, str]]


def _double_quoted(value: str, dollar: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + escaped.replace("$", dollar) + '"'


def dotenv_value(value: str, variant: ComposeVariant) -> str | None:
    """`value` as that Compose's env_file reads it back exactly; None where it cannot."""
    if variant == "v2":
        if "'" not in value and not value.endswith("\\"):
            return f"'{value}'"
        return _double_quoted(value, "$$")
    if "${" in value or "\r" in value or value.endswith("\\"):
        return None
    if "'" not in value and "\\" not in value:
        return f"'{value}'"
    return _double_quoted(value, "$")


def dotenv_text(pairs: Pairs, variant: ComposeVariant) -> tuple[str, list[str]]:
    """The env_file text, and the names it had to leave out (see the module's docstring)."""
    lines, left_out = [], []
    for name, value in pairs:
        encoded = dotenv_value(value, variant)
        if encoded is None:
            left_out.append(name)
        else:
            lines.append(f"{name}={encoded}\n")
    return "".join(lines), left_out


def shell_text(pairs: Pairs) -> str:
    """`export NAME='value'` lines a POSIX shell sources back exactly."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in pairs)
