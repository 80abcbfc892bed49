"""Rollback planning: back to the color that served before, at the commit it last served, by starting
its kept containers. The journal says what that color served; the host must still have the very
containers that served it. Planning changes nothing: every refusal leaves the host as it was."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .config import Color, other_color
from .errors import DeployError
from .journal import ADOPTED, Entry, last_switch
from .stacks import Container, Stacks

FIX = "deploy the commit you want instead (command: deploy)"


@dataclass(frozen=True)
class Plan:
    target: Color
    sha: str  # the commit the target color last served (or, adopted, the one the checkout had then)
    containers: list[Container]  # its kept containers, the ones that served it
    back: str  # the commit the live color runs: checked out again if the rollback fails before its switch
    adopted: bool = False  # the target was adopted: its commit is the one the checkout had, not verified


def rerun_of_a_rollback(journal: list[Entry], run_url: str, live: Color | None) -> Entry | None:
    """The switch this very job (same run URL) already made, if it is a rollback that got past its
    switch and its target still serves: a rerun finishes it instead of rolling back again."""
    switched = last_switch(journal)
    if not (run_url and switched and switched.get("command") == "rollback" and switched.get("run") == run_url):
        return None
    if switched.get("result") not in ("success", "switched"):
        return None  # a fleet switched it back: that rollback did not stand
    return switched if live is not None and switched.get("to") == live else None


def choose(journal: list[Entry], live: Color | None, nginx_missing: str) -> tuple[Color, Entry]:
    """The color to go back to and the journal entry of its last switch; a DeployError if there is
    nothing to roll back to. `nginx_missing`: the nginx container that does not run yet, if so."""
    if nginx_missing:
        raise DeployError(f"nothing to roll back: nginx ({nginx_missing}) is not running, so no color serves", FIX)
    if live is None:
        raise DeployError("nothing to roll back: nginx serves neither color", FIX)
    target = other_color(live)
    entry = last_switch(journal, target, adopted=True)
    if entry is None:
        raise DeployError(f"nothing to roll back to: the journal has no deploy that switched to {target}", FIX)
    return target, entry


async def plan(
    journal: list[Entry],
    live: Color | None,
    nginx_missing: str,
    stacks: Stacks,
    use_commit: Callable[[str], Awaitable[None]],
) -> Plan:
    """What to roll back to, checked against the host. `use_commit(sha)` loads the stacks' compose
    files at that commit (so the target's containers are known by its services there)."""
    target, entry = choose(journal, live, nginx_missing)
    assert live is not None
    ref, recorded = str(entry.get("ref", "")), entry.get("containers")
    await use_commit(ref)
    found = await stacks.of(target)
    if not found:
        later = journal[journal.index(entry) + 1 :]
        removed = [
            e
            for e in later
            if e.get("result") in ("success", "switched") and e.get("from") == target and e.get("keep") == "none"
        ]
        why = (
            f"the deploy of {str(removed[-1].get('ref', ''))[:12]} removed them (keep-previous: none)"
            if removed
            else "they were removed"
        )
        raise DeployError(f"nothing to roll back to: {target}'s containers from {ref[:12]} are gone: {why}", FIX)
    if not isinstance(recorded, list) or {c.id for c in found} != set(recorded):
        raise DeployError(
            f"nothing to roll back to: {target}'s containers are not the ones that served {ref[:12]} "
            "(a later deploy rebuilt them, or the journal entry predates container tracking)",
            FIX,
        )
    live_entry = last_switch(journal, live)
    back = str(live_entry.get("ref", "")) if live_entry else ""
    return Plan(target, ref, found, back, adopted=entry.get("result") == ADOPTED)
