"""strategy: canary: a share of the real traffic to the new color, judged by what nginx logged.

    begin (the switch marker holds the live upstream) → for each of canary-steps: write the split
    (each upstream with both colors' servers, weighted, and an access log) → nginx -t → reload →
    confirm → count the log → verdict → the switch to the new color alone | the switch's undo

The split is written in the upstream file the action already owns: each `upstream` block of the new
color's file gets the old color's servers too, with weights that give the new one its share (a
`hash` on canary-sticky's value keeps a user on one color). nginx's own access log, set up in the
same file and removed after, records each response's upstream address and status; the addresses are
mapped to colors as nginx resolved the servers' names. The judge sums the counts of every host of
the canary (one host, or a fleet's first batch) and decides for all of them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import json
import math
import posixpath
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from . import commands
from .config import CanaryPlan, Color, Config, other_color
from .errors import DeployError
from .journal import STATE_DIR, Entry, parse_json
from .nginx import SECTION, normalize, server_target, server_targets, servers, show_target
from .remote import Host

POLL_SECONDS = 0.5  # how often each host reads its log during a step: an abort comes within about this
HELD = "canary-held"  # .bluegreen/canary-held: a canary that canary-steps left held, until promote or abort


def held_path(cfg: Config) -> str:
    return cfg.app_path(posixpath.join(STATE_DIR, HELD))


_BLOCK = re.compile(r"\bupstream\s+([^\s{}]+)\s*\{([^{}]*)\}")
_BALANCING = ("ip_hash", "hash", "least_conn", "random", "least_time", "sticky")
_ADDRESS_SPLIT = re.compile(r", | : ")
_QUOTED_HASH = re.compile(r"\"[^\"\n]*#[^\"\n]*\"|'[^'\n]*#[^'\n]*'")  # normalize() would cut it short


class CanaryError(DeployError):
    """The upstream files cannot be split (named so the user fixes them): nothing was changed."""


@dataclass
class Counts:
    """One color's responses in a step, as nginx logged them."""

    responses: int = 0
    errors: int = 0  # 5xx
    times: list[float] = field(default_factory=list)  # upstream response times, seconds

    def include(self, other: Counts) -> None:
        """Add `other` in place (a step's running count: no copy of its times at each read)."""
        self.responses += other.responses
        self.errors += other.errors
        self.times.extend(other.times)

    @property
    def rate(self) -> float:
        """The 5xx share, in percent."""
        return 100 * self.errors / self.responses if self.responses else 0.0

    @property
    def p99(self) -> float | None:
        if not self.times:
            return None
        ordered = sorted(self.times)
        return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]

    def text(self) -> str:
        return f"{self.errors} 5xx of {self.responses} ({self.rate:.1f}%)"


@dataclass
class StepResult:
    share: int
    seconds: float
    new: Counts
    old: Counts
    verdict: str  # "passed", "held", or why it was aborted

    def journal(self) -> Entry:
        return {
            "share": self.share,
            "seconds": round(self.seconds, 1),
            "new": [self.new.responses, self.new.errors],
            "old": [self.old.responses, self.old.errors],
            "verdict": self.verdict,
        }


# -- the split ------------------------------------------------------------------------------------


def upstream_blocks(text: str) -> dict[str, list[str]]:
    """Each `upstream` block of a config text: its name and its directives (normalized, without `;`)."""
    return {name: [d.strip() for d in body.split(";") if d.strip()] for name, body in _BLOCK.findall(normalize(text))}


def weights(share: int, new: int, old: int) -> tuple[int, int]:
    """Per-server weights that give `new` servers `share`% of requests and `old` servers the rest."""
    a, b = share * old, (100 - share) * new
    divisor = math.gcd(a, b)
    return a // divisor, b // divisor


def _server(directive: str, weight: int) -> str:
    words = [w for w in directive.split()[1:] if not w.startswith("weight=")]
    return " ".join(["server", words[0], f"weight={weight}", *words[1:]])


def split_config(
    live: str,
    new: str,
    share: int,
    sticky: str = "",
    log: tuple[str, str] | None = None,
    names: str = "",
    peers: Mapping[str, int] | None = None,
) -> str:
    """The upstream text that sends `share`% of requests to the servers of `new` (the new color's
    upstream file) and the rest to those of `live`, block by block; with `sticky` (an nginx variable),
    by a consistent hash of its value; with `log` (path, format name), nginx logs each proxied
    response's upstream address, status and time there. `names`: the two files, for messages.
    `peers`: how many addresses a server's name resolves to (nginx makes each one a peer with the
    server's weight); 1 for any not given."""
    peers = peers or {}
    live_blocks, new_blocks = upstream_blocks(live), upstream_blocks(new)
    if _QUOTED_HASH.search(new):
        raise CanaryError(
            f"the new color's upstream file has a # inside quotes ({names}), which the split cannot carry",
            "drop the quoted #, or use strategy: switch for this deploy",
        )
    if not new_blocks:
        raise CanaryError(
            f"the new color's upstream file has no upstream block to split ({names})",
            "define each app server in an 'upstream NAME { server ...; }' block, or use strategy: switch",
        )
    if set(live_blocks) != set(new_blocks):
        raise CanaryError(
            f"the two upstream files define different upstreams ({names}: {', '.join(sorted(live_blocks))} and "
            f"{', '.join(sorted(new_blocks))}), so no share of each can be sent to the new color",
            "give both colors' upstream files the same upstream names, or use strategy: switch for this deploy",
        )
    head = [f"# written by bluegreen-action: {share}% of requests to the new color, during a canary"]
    if log:
        path, name = log
        head += [
            f"log_format {name} '$upstream_addr|$upstream_status|$upstream_response_time';",
            f"access_log {path} {name} if=$upstream_addr;",
        ]

    def counted(directive: str) -> int:  # peers that take requests: not a backup, not down
        words = directive.split()
        return 0 if {"backup", "down"} & set(words[2:]) else peers.get(words[1], 1)

    def merged(match: re.Match[str]) -> str:
        block = match.group(1)
        directives = new_blocks[block]
        new_servers = [d for d in directives if d.split()[0] == "server"]
        old_servers = [d for d in live_blocks[block] if d.split()[0] == "server"]
        new_peers, old_peers = sum(map(counted, new_servers)), sum(map(counted, old_servers))
        if not new_peers or not old_peers:
            raise CanaryError(
                f"upstream {block} has no server that takes requests in one of the upstream files ({names})",
                "give each upstream block a server (not backup, not down) in both files",
            )
        if sticky and any("backup" in d.split()[2:] for d in [*new_servers, *old_servers]):
            raise CanaryError(
                f"upstream {block} has a backup server, which nginx refuses with canary-sticky's hash",
                "clear canary-sticky, or drop the backup server",
            )
        w_new, w_old = weights(share, new_peers, old_peers)
        rest = [d for d in directives if d.split()[0] != "server"]
        others = [d for d in rest if d.split()[0] not in _BALANCING]
        # the new file's balancing method, or canary-sticky's hash; it must come before keepalive
        balancing = [f"hash {sticky} consistent"] if sticky else [d for d in rest if d.split()[0] in _BALANCING]
        servers = [*(_server(d, w_new) for d in new_servers), *(_server(d, w_old) for d in old_servers)]
        lines = [*balancing, *servers, *others]
        return f"\nupstream {block} {{\n" + "".join(f"    {line};\n" for line in lines) + "}\n"

    # the new file as it is (a map, a second server block), but for its upstream blocks
    return "\n".join(head) + "\n" + _BLOCK.sub(merged, normalize(new)).strip() + "\n"


# -- the count ------------------------------------------------------------------------------------


def parse_log(text: str, colors: Mapping[str, Color]) -> dict[Color, Counts]:
    """Each color's responses in log lines `$upstream_addr|$upstream_status|$upstream_response_time`.
    Every try counts (nginx may try a second server after an error): for the color whose address it
    went to. Addresses of neither color (another app's upstreams) are not counted."""
    counts: dict[Color, Counts] = {"blue": Counts(), "green": Counts()}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) != 3:
            continue
        tries = zip(*(_ADDRESS_SPLIT.split(f) for f in fields), strict=False)
        for address, status, seconds in tries:
            color = colors.get(address.strip())
            if color is None:
                continue
            one = counts[color]
            one.responses += 1
            one.errors += status.strip().startswith("5")  # a server that did not answer: nginx's 502 or 504
            with contextlib.suppress(ValueError):  # "-": no response (the client went away)
                one.times.append(float(seconds))
    return counts


class CanaryLog:
    """nginx's access log for the canary: where it is, what its addresses are, what it holds."""

    def __init__(self, host: Host, cfg: Config) -> None:
        self.host = host
        self.container = cfg.nginx_container
        project = cfg.project_name.replace("-", "_")
        self.format = f"bluegreen_canary_{project}"
        # in nginx's container, a folder every image has; on the host, the action's own folder
        self.path = (
            f"/tmp/bluegreen-{cfg.project_name}-canary.log"
            if self.container
            else cfg.app_path(posixpath.join(STATE_DIR, "canary.log"))
        )
        self.offset = 0
        self.colors: dict[str, Color] = {}  # each address nginx may log, by the color it serves
        self.peers: dict[str, int] = {}  # each server as the upstream files write it: its addresses
        self.counts: dict[Color, Counts] = {"blue": Counts(), "green": Counts()}  # since `mark`

    async def resolve(self, upstreams: Mapping[Color, str]) -> None:
        """Map each server address of both colors to its color, as nginx resolved the names."""
        targets = {color: server_targets(text) for color, text in upstreams.items()}
        names = sorted({h for found in targets.values() for h, _ in found if h != "unix" and not _literal(h)})
        found: dict[str, set[str]] = {}
        if names:
            result = await self.host.run(commands.resolve_names(self.container, names), check=False)
            if "no-tool" in result.stdout.split():
                raise CanaryError(
                    "cannot find the addresses nginx connects to for the upstream servers: nginx's image has no getent",
                    "use an nginx image with getent (the official ones have it), or strategy: switch",
                )
            for line in result.stdout.splitlines():
                name, _, address = line.partition(" ")
                found.setdefault(name, set()).add(address.strip())
        if missing := [n for n in names if n not in found]:
            raise CanaryError(
                f"nginx's view cannot resolve {', '.join(missing)}, named in the upstream files",
                "check the upstream files' server names: nginx must reach the colors by them",
            )
        self.colors = {}
        for color, pairs in targets.items():
            for host, port in pairs:
                for address in found.get(host, {host}):
                    key = show_target((address, port)) if host != "unix" else f"unix:{port}"
                    if self.colors.get(key, color) != color:
                        raise CanaryError(
                            f"{key} is a server of both colors' upstream files, so nginx's log cannot tell them apart",
                            "point each color's upstream file at its own servers",
                        )
                    self.colors[key] = color
        for text in upstreams.values():
            for written in servers(text):
                self.peers[written] = len(found.get(server_target(written)[0], ())) or 1

    async def mark(self) -> None:
        """The counts start here: the log's present end."""
        result = await self.host.run(commands.file_size(self.container, self.path), check=False)
        self.offset = int(result.stdout.strip()) if result.stdout.strip().isdigit() else 0
        self.counts = {"blue": Counts(), "green": Counts()}

    async def read(self) -> dict[Color, Counts]:
        """Each color's responses since `mark`: the whole lines logged since the last read, added up."""
        result = await self.host.run(commands.read_from(self.container, self.path, self.offset), check=False)
        text = result.stdout[: result.stdout.rfind("\n") + 1]  # the log is ASCII: a character is a byte
        self.offset += len(text)
        for color, more in parse_log(text, self.colors).items():
            self.counts[color].include(more)
        return self.counts

    async def remove(self) -> None:
        await self.host.run(commands.remove_in_nginx(self.container, self.path), check=False)


def _literal(host: str) -> bool:
    return bool(re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]*:[0-9a-fA-F:.]*", host))


# -- the verdict ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    kind: str  # "wait" (keep counting), "next" (the step passed), "extend" (held once more), "abort"
    why: str = ""


WAIT = Verdict("wait")


class Judge:
    """Decides each step for every host of the canary at once, on the sum of their counts. Each host
    calls `tick` about every POLL_SECONDS with its counts so far in the step; the verdict comes once
    every host has."""

    def __init__(self, plan: CanaryPlan, size: int = 1) -> None:
        self.plan = plan
        self.size = size
        self.pending: dict[tuple[int, int], tuple[list[tuple[Counts, Counts]], asyncio.Future[Verdict]]] = {}
        self.started: dict[int, float] = {}
        self.extended: set[int] = set()
        self.results: list[StepResult] = []
        self.stopped: BaseException | None = None

    async def tick(self, step: int, tick: int, new: Counts, old: Counts) -> Verdict:
        if self.stopped is not None:
            raise self.stopped
        key = (step, tick)
        if key not in self.pending:
            self.pending[key] = ([], asyncio.get_running_loop().create_future())
        samples, future = self.pending[key]
        samples.append((new, old))
        self.settle()
        return await asyncio.shield(future)

    def leave(self) -> None:
        """A host the fleet counted makes no canary (a first deploy there): the rest go on without it."""
        self.size -= 1
        self.settle()

    def settle(self) -> None:
        """Decide every tick that every host of the canary has reported."""
        for key, (samples, future) in list(self.pending.items()):
            if len(samples) >= self.size and not future.done():
                del self.pending[key]
                total_new, total_old = Counts(), Counts()
                for one_new, one_old in samples:
                    total_new.include(one_new)
                    total_old.include(one_old)
                future.set_result(self.decide(key[0], total_new, total_old))

    def stop(self, error: BaseException) -> None:
        """The canary ends elsewhere (another host failed): every host waiting gets `error`."""
        self.stopped = error
        for _, future in self.pending.values():
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: a host that never awaits it must not warn
        self.pending.clear()

    def decide(self, step: int, new: Counts, old: Counts) -> Verdict:
        plan, share = self.plan, self.plan.steps[step]
        now = time.monotonic()
        started = self.started.setdefault(step, now)
        seconds = now - started
        worse = new.rate > plan.max_5xx and new.rate > old.rate
        enough = new.responses >= max(1, plan.min_requests)
        verdict = WAIT
        # before the step's end, only a rate that is over both with 95% confidence: judged again every
        # half second, a point estimate would blame a healthy release for its noise
        surely = lower_bound(new.errors, new.responses)
        failed = Verdict(
            "abort",
            f"the canary at {share}% failed: the new color answered {new.text()}, over canary-max-5xx "
            f"({plan.max_5xx:g}%) and worse than the old color's {old.text()}",
        )
        if enough and surely > plan.max_5xx and surely > old.rate:
            verdict = failed
        elif seconds < plan.seconds * (2 if step in self.extended else 1):
            return WAIT
        elif new.responses < plan.min_requests and step not in self.extended:
            self.extended.add(step)
            verdict = Verdict("extend", f"{new.responses} responses of the new color, fewer than canary-min-requests")
        elif new.responses < plan.min_requests:
            verdict = Verdict(
                "abort",
                f"the canary at {share}% was inconclusive: the new color gave {new.responses} responses in "
                f"{seconds:.0f}s (the step held twice), fewer than canary-min-requests ({plan.min_requests})",
            )
        elif worse:  # the step's end: its whole window, judged as canary-max-5xx says
            verdict = failed
        else:
            verdict = Verdict("next")
        if verdict.kind != "extend":
            result = "passed" if verdict.kind == "next" else verdict.why
            self.results.append(StepResult(share, seconds, new, old, result))
        return verdict


def lower_bound(errors: int, responses: int, z: float = 1.96) -> float:
    """The Wilson score interval's lower end for a 5xx share, in percent."""
    if not responses:
        return 0.0
    p, n = errors / responses, responses
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, 100 * (centre - spread) / (1 + z * z / n))


# -- a held canary --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """A canary that canary-steps left held: the split nginx serves, and what it replaced."""

    live: Color
    target: Color
    ref: str
    share: int
    split: str  # the upstream text nginx serves while held
    previous: str  # the live color's upstream text, put back by abort
    run: str
    since: str
    asked: str = ""  # the ref as the run gave it (a branch, say), for a rerun of that run

    def record(self) -> str:
        return json.dumps(self.__dict__)

    @staticmethod
    def parse(text: str) -> Held | None:
        entry = parse_json(text)
        try:
            live = entry["live"]
            if live not in ("blue", "green"):
                return None
            return Held(
                live=live,
                target=other_color(live),
                ref=str(entry["ref"]),
                share=int(str(entry["share"])),
                split=str(entry["split"]),
                previous=str(entry["previous"]),
                run=str(entry.get("run", "")),
                since=str(entry.get("since", "")),
                asked=str(entry.get("asked", "")),
            )
        except (KeyError, ValueError):
            return None

    def serves(self, dump_sections: list[str]) -> bool:
        """Whether nginx has this split loaded."""
        return normalize(self.split) in dump_sections


# -- nginx's log must see the canary ---------------------------------------------------------------

_TOKEN = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|#[^\n]*|[{};]|[^\s{};]+")
_PROXIED = re.compile(r"^(?:[a-z]+://)?([^/:$\s]+)")  # the upstream a proxy_pass (grpc_pass, ...) names
_LOGGED = ("server", "location", "if", "limit_except")  # blocks that may set an access_log of their own


def log_blocked(dump: str, upstreams: set[str]) -> str:
    """Why the access log the canary adds at http level would miss requests nginx proxies to
    `upstreams` ("" if nothing found stops it): `access_log off` in http {} cancels every log there,
    and a server or location that sets its own access_log does not inherit it. Read as nginx reads
    it: from the main file (the first `nginx -T` shows), each include in its place (a snippet's
    access_log counts for the block that includes it); a file no include reached is read alone."""
    parts = SECTION.split(dump)
    files = {name: _TOKEN.findall(text) for name, text in zip(parts[1::2], parts[2::2], strict=False)}
    prefix = posixpath.dirname(next(iter(files), ""))
    problems: list[str] = []
    seen: set[str] = set()
    opened: list[str] = []  # the include chain being read (a file never includes itself again)

    @functools.cache
    def matching(pattern: str) -> list[str]:
        pattern = posixpath.join(prefix, pattern)
        if not any(c in pattern for c in "*?["):
            return [pattern] if pattern in files else []
        return sorted(f for f in files if _glob_match(pattern, f))

    def read(name: str, stack: list[str], frames: list[list[bool]]) -> None:
        """One file's tokens, in the blocks open where it is read (frames: per open server,
        location or if, [proxies to ours within, own log])."""
        seen.add(name)
        opened.append(name)
        words: list[str] = []
        for token in files[name]:
            if token.startswith("#"):
                continue
            if token == "{":
                stack.append(words[0] if words else "")
                if stack[-1] in _LOGGED and not {"upstream", "stream", "mail"} & set(stack[:-1]):
                    frames.append([False, False])
                words = []
            elif token == "}":
                if stack and stack.pop() in _LOGGED and frames:
                    proxies, logs = frames.pop()
                    if proxies and logs:
                        problems.append(f"a server or location in {name} sets its own access_log")
                    if proxies and frames:
                        frames[-1][0] = True
                words = []
            elif token == ";":
                if words and words[0] == "access_log":
                    if frames:
                        frames[-1][1] = True
                    elif stack[-1:] == ["http"] and "off" in words[1:2]:
                        problems.append(f"{name} has access_log off in http {{}}")
                if words and words[0].endswith("_pass") and frames and len(words) > 1:
                    match = _PROXIED.match(words[1].strip("\"'"))
                    if match and match.group(1) in upstreams:
                        frames[-1][0] = True
                if words[:1] == ["include"] and len(words) > 1:
                    for included in matching(words[1].strip("\"'")):
                        if included not in opened:
                            read(included, stack, frames)
                words = []
            else:
                words.append(token)
        opened.pop()

    for name in files:
        if name not in seen:
            read(name, [], [])
    return "; ".join(dict.fromkeys(problems))


def _glob_match(pattern: str, path: str) -> bool:
    """A path as glob(3) matches it, which nginx's include uses: part by part (`*` stops at `/`),
    and a name starting with a dot only by a part that starts with one."""
    want, have = pattern.split("/"), path.split("/")
    return len(want) == len(have) and all(
        fnmatch.fnmatchcase(h, w) and (not h.startswith(".") or w.startswith("."))
        for w, h in zip(want, have, strict=True)
    )


# -- the steps on one host ------------------------------------------------------------------------


class Canary:
    """The canary's steps on one host: each split reloaded as a switch is, then counted and judged."""

    def __init__(
        self, cfg: Config, judge: Judge, log: CanaryLog, info: Callable[[str], None], warn: Callable[[str, str], None]
    ) -> None:
        self.cfg = cfg
        self.judge = judge
        self.info = info
        self.warn = warn
        self.log = log
        self.old_workers: set[int] = set()  # every generation of nginx workers the steps replaced
        self.reloaded = False  # a split was loaded: the log exists, and the split's workers must drain
        self.live_color: Color = "blue"
        self.aborted_at = 0.0  # when the judge aborted the canary (monotonic)

    def split(self, live: str, new: str, share: int, *, log: bool = True) -> str:
        names = f"{self.cfg.upstream_file_for('blue')}, {self.cfg.upstream_file_for('green')}"
        where = (self.log.path, self.log.format) if log else None
        return split_config(live, new, share, self.cfg.canary.sticky, where, names, self.log.peers)

    async def check(self, live: str, new: str, live_color: Color, dump: str) -> None:
        """Before any change: the split can be written, nginx's log will see it, and each server's
        address is known."""
        self.split(live, new, self.cfg.canary.steps[0])
        if blocked := log_blocked(dump, set(upstream_blocks(new))):
            raise CanaryError(
                f"nginx would not log the canary's requests ({blocked}), so no step could be judged",
                "let the http-level access_log apply to the app's server: drop 'access_log off' from http {} and "
                "move the app server's own access_log into http {} (docs/canary.md), or use strategy: switch",
            )
        self.live_color = live_color
        await self.log.resolve({live_color: live, other_color(live_color): new})

    async def run(
        self, live: str, new: str, reload: Callable[[str], Awaitable[set[int]]], mark: Callable[[int], Awaitable[None]]
    ) -> None:
        """Each step: `mark` it (the switch marker), `reload` the split, count, judge. DeployError on
        an abort; returns once every step passed."""
        plan = self.cfg.canary
        for step, share in enumerate(plan.steps):
            await mark(share)
            self.reloaded = True
            self.old_workers |= await reload(self.split(live, new, share))
            await self.log.mark()
            self.info(f"canary: {share}% of requests to the new color for {plan.seconds}s")
            tick = 0
            while True:
                await asyncio.sleep(POLL_SECONDS)
                counts = await self.log.read()
                new_color = other_color(self.live_color)
                verdict = await self.judge.tick(step, tick, counts[new_color], counts[self.live_color])
                tick += 1
                if verdict.kind == "abort":
                    self.aborted_at = time.monotonic()
                    raise DeployError(
                        verdict.why,
                        "fix the release (the new color's log lines are below), then deploy again; every request "
                        "went back to the old color",
                    )
                if verdict.kind == "extend":
                    self.info(f"canary at {share}%: {verdict.why}; the step is held once more")
                if verdict.kind == "next":
                    if not counts["blue"].responses and not counts["green"].responses:
                        self.warn(
                            f"nginx logged no request to either color during the canary at {share}%: with no "
                            "traffic it was not judged (a server or location with an access_log of its own, in a "
                            "file the check could not place, would hide the requests too: docs/canary.md)",
                            "Canary step unjudged",
                        )
                    break
