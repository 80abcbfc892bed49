"""How GitHub's runner reads a step's log: which lines it acts on as workflow commands."""

from __future__ import annotations

import re

REGISTERED = {
    "set-env", "set-output", "save-state", "add-mask", "add-path", "add-matcher", "remove-matcher", "debug",
    "warning", "error", "notice", "group", "endgroup", "echo", "stop-commands",
}  # fmt: skip


def runner_commands(log: str) -> list[tuple[str, str, str]]:
    """The commands the runner would act on in `log`, as actions/runner parses them: its lines
    (split at CR, LF and CRLF), `::name ...::data` once leading white space is trimmed, the legacy
    `##[name ...]data` anywhere in a line, and stop-commands until its token comes back. Each is
    (name, data, the whole line)."""
    seen: list[tuple[str, str, str]] = []
    stop_token = ""
    for line in re.split(r"\r\n|\r|\n", log):
        found = None
        trimmed = line.lstrip()
        if trimmed.startswith("::") and (end := trimmed.find("::", 2)) > 0:
            found = (trimmed[2:end].split(" ")[0], trimmed[end + 2 :])
        elif (start := line.find("##[")) >= 0 and (end := line.find("]", start)) > 0:
            found = (line[start + 3 : end].split(" ")[0], line[end + 1 :])
        if found is None:
            continue
        name, data = found
        if stop_token:
            if name == stop_token:
                stop_token = ""
                seen.append(("resume", name, line))
            continue
        if name == "stop-commands":
            stop_token = data
        if name in REGISTERED:
            seen.append((name, data, line))
    return seen
