"""The app's checkout on the host: fetch, resolve a ref as a person means it, read files at a commit,
and check a commit out without overwriting anything the host owns.

A ref means what it says:
- a branch name (`main`, `refs/heads/main` or `origin/main`): origin's branch, as just fetched; the
  clone's own local branches are never read (the action's detached checkouts never move them);
- a tag (`v1.2`, or `refs/tags/v1.2`): origin's tag, as just fetched (moved or deleted there, so here);
- a commit SHA: that commit, fetched by SHA if no branch or tag brought it;
- any other full ref (`refs/pull/7/head`): fetched from origin as it is.
A name that is both a branch and a tag, at different commits, is refused as ambiguous.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

from . import commands
from .config import Color, Config
from .errors import DeployError, first_few
from .journal import STATE_DIR
from .remote import Host, checked
from .stacks import STACKS, ComposeFile, Stack, by_stack, read_files

FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
MARKER_LINES = 5  # checkouts begun that the marker remembers; each costs an SSH session where it is read
SHORT_SHA = re.compile(r"^[0-9a-f]{7,39}$")


@dataclass(frozen=True)
class Resolved:
    sha: str
    how: str  # what the ref turned out to be, for the log: "branch main", "tag v1.2", "commit"


def ref_names(ref: str) -> list[tuple[str, str]]:
    """The full names a ref may mean, each with what it is: tried after a fetch, all of them; more
    than one answer is ambiguous. Empty for a ref that must be fetched as it is."""
    if ref.startswith(("refs/heads/", "origin/")):
        branch = ref.removeprefix("refs/heads/").removeprefix("origin/")
        return [(f"refs/remotes/origin/{branch}", f"branch {branch}")]
    if ref.startswith("refs/tags/"):
        return [(ref, f"tag {ref.removeprefix('refs/tags/')}")]
    if ref.startswith("refs/"):
        return []
    if FULL_SHA.match(ref):
        return [(ref, "commit")]
    return [(f"refs/tags/{ref}", f"tag {ref}"), (f"refs/remotes/origin/{ref}", f"branch {ref}")]


def parse_blobs(output: bytes, names: Sequence[str]) -> dict[str, str | None]:
    """`git cat-file --batch --follow-symlinks` output for `names`, in order: each name's text, or
    None where there is no blob (missing; a tree; a symlink out of the repository, dangling, a loop)."""
    out: dict[str, str | None] = {}
    at = 0
    for name in names:
        end = output.index(b"\n", at)
        header = output[at:end].decode("utf-8", "replace").split()
        at = end + 1
        out[name] = None
        size = header[-1] if len(header) in (2, 3) and header[-1].isdigit() else ""
        if size and header[-2] == "blob":
            out[name] = output[at : at + int(size)].decode("utf-8", "replace")
        if size:  # a body follows every header that ends with a size
            at += int(size) + 1
    return out


def only_one(ref: str, found: dict[str, str]) -> tuple[str, str] | None:
    """The one commit (and what it is) that `ref`'s names point at, of `found` ({sha: what}); None if
    none does; more than one is ambiguous (a branch and a tag of that name, at different commits)."""
    if len(found) > 1:
        raise DeployError(
            f"ref {ref} is ambiguous: " + ", ".join(f"{how} is {sha[:12]}" for sha, how in found.items()),
            f"give refs/heads/{ref} for the branch or refs/tags/{ref} for the tag",
        )
    return next(iter(found.items()), None)


def parents(path: str) -> list[str]:
    """The folders above a relative path: a/b/c -> [a, a/b]."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class Checkout:
    def __init__(self, host: Host, config: Config) -> None:
        self.host = host
        self.cfg = config
        self.app = config.app_dir

    async def head(self) -> str:
        """The commit checked out now ("" in a clone with no commit)."""
        return (await self.host.run(commands.git_head(self.app), check=False)).stdout.strip()

    async def fetch(self) -> None:
        await checked(
            self.host,
            commands.git_fetch(self.app),
            "git fetch",
            f"check that {self.cfg.username} can fetch the app's origin remote in {self.app} (deploy key, network)",
        )

    async def resolve(self, ref: str) -> Resolved:
        """The commit `ref` means (see the module's docstring), after a fetch."""
        names = ref_names(ref)
        results = await asyncio.gather(
            *(self.host.run(commands.git_resolve(self.app, name), check=False) for name, _ in names)
        )
        found = {r.stdout.strip(): how for (_, how), r in zip(names, results, strict=True) if r.ok}
        if one := only_one(ref, found):
            return Resolved(*one)
        if SHORT_SHA.match(ref) and (short := await self.commit(ref)):
            return Resolved(short, "commit")
        if (await self.host.run(commands.git_fetch_ref(self.app, ref), check=False)).ok:
            fetched = await self.commit(ref if FULL_SHA.match(ref) else "FETCH_HEAD")
            if fetched:
                return Resolved(fetched, "commit" if FULL_SHA.match(ref) else f"ref {ref}")
        raise DeployError(
            f"ref {ref} was not found in the origin of {self.app}",
            "push the commit first, or give an existing commit, branch or tag as ref",
        )

    async def resolve_on_origin(self, ref: str) -> tuple[str, str, bool]:
        """What `ref` means on origin now, without a fetch (a plan): (its commit, what the ref turned
        out to be, whether the clone has that commit already). A ref origin does not have, or a
        short SHA the clone lacks, is a DeployError, as in `resolve`."""
        names = ref_names(ref)
        on_origin = {
            name.replace("refs/remotes/origin/", "refs/heads/", 1): how for name, how in names if how != "commit"
        }
        if ref.startswith("refs/") and not names:
            on_origin[ref] = f"ref {ref}"
        found: dict[str, str] = {}
        if on_origin:
            listed = await checked(
                self.host,
                commands.git_ls_remote(self.app, list(on_origin)),
                "git ls-remote",
                f"check that {self.cfg.username} can reach the app's origin remote in {self.app}",
            )
            refs: dict[str, str] = {}
            for line in listed.splitlines():
                sha, _, name = line.partition("\t")
                if name.removesuffix("^{}") in on_origin and (name.endswith("^{}") or name not in refs):
                    refs[name.removesuffix("^{}")] = sha  # a tag's peeled line wins: the commit
            found = {sha: on_origin[name] for name, sha in refs.items()}
        if one := only_one(ref, found):
            return one[0], one[1], bool(await self.commit(one[0]))
        if FULL_SHA.match(ref) or SHORT_SHA.match(ref):  # a deploy fetches it (or, short, the branch that has it)
            local = await self.commit(ref)
            return local or ref, "commit", bool(local)
        raise DeployError(
            f"ref {ref} was not found in the origin of {self.app}",
            "push the commit first, or give an existing commit, branch or tag as ref",
        )

    async def commit(self, name: str) -> str:
        return (await self.host.run(commands.git_resolve(self.app, name), check=False)).stdout.strip()

    async def read(self, sha: str, paths: Sequence[str], *, on_disk: bool = False) -> dict[str, str | None]:
        """The text of each path (relative to app-dir) at `sha`, or None where the commit lacks it
        (a symlink is followed inside the repository); with `on_disk`, a path the commit lacks and
        the checkout does not track is read from the host's work tree instead (a file kept on the
        host, untracked; or one a symlink points to outside the repository)."""
        wanted = [p for p in dict.fromkeys(paths) if p]
        if not wanted or not sha:
            return dict.fromkeys(wanted)
        names = [f"{sha}:./{path}" for path in wanted]
        result = await self.host.run(commands.git_read_blobs(self.app), input="".join(n + "\n" for n in names))
        blobs = parse_blobs(result.raw or result.stdout.encode(), names)
        texts = {path: blobs[name] for path, name in zip(wanted, names, strict=True)}
        if on_disk and (missing := [path for path, text in texts.items() if text is None]):
            tracked = await self.host.run(commands.git_tracked(self.app, missing), check=False)
            going = {p for p in tracked.stdout.split("\0") if p}  # the checkout deletes these
            texts.update(await self.read_disk([p for p in missing if p not in going]))
        return texts

    async def read_disk(self, paths: Sequence[str]) -> dict[str, str | None]:
        """The text of each path (relative to app-dir) in the host's work tree, or None if missing."""
        wanted = [p for p in dict.fromkeys(paths) if p]
        reads = await asyncio.gather(
            *(self.host.run(commands.read_file(self.cfg.app_path(p)), check=False) for p in wanted)
        )
        return {path: r.stdout if r.ok else None for path, r in zip(wanted, reads, strict=True)}

    async def stack_files(
        self, sha: str, target: Color, earlier: Sequence[str]
    ) -> tuple[dict[Stack, ComposeFile], list[dict[Stack, ComposeFile]]]:
        """The stacks' compose files at `sha` (read from the host where the commit lacks one it keeps
        untracked) and at the `earlier` commits; the files a deploy to `target` needs must exist at
        `sha`, and each of its files must parse."""
        cfg = self.cfg
        names = {stack: cfg.stack_file(stack) for stack in STACKS}
        upstream = cfg.upstream_file_for(target)
        texts = await self.read(sha, [*names.values(), upstream], on_disk=True)
        needed = [(names[target], "compose-file"), (upstream, "upstream-file")]
        if cfg.base_compose_file:
            needed.append((cfg.base_compose_file, "base-compose-file"))
        for path, name in needed:
            if texts.get(path) is None:
                raise DeployError(
                    f"{path} does not exist at {sha[:12]} ({name})",
                    f"commit {path}, or set {name} to where the file is",
                )
        before = await asyncio.gather(*(self.read(e, list(names.values())) for e in earlier))
        current = read_files(by_stack(texts, names), names)
        return current, [read_files(by_stack(t, names), names, strict=False) for t in before]

    async def check_host_files(self, sha: str, set_aside: str) -> None:
        """Refuse, before anything changes, a checkout that would overwrite what the host owns: a
        path `sha` tracks that exists on the host untracked (or ignored), in any form, or a folder it
        needs that is a file or a symlink there; and a commit that tracks the action's state folder.
        `set_aside`: the live upstream file (relative), which the checkout never sees."""
        app = self.app
        added_out, state_out = await asyncio.gather(
            checked(self.host, commands.git_added_paths(app, sha), "listing the commit's new paths", "check the clone"),
            checked(
                self.host, commands.git_tracked_under(app, sha, STATE_DIR), "listing the commit's files", "check it"
            ),
        )
        if tracked := [p for p in state_out.split("\0") if p]:
            raise DeployError(
                f"{sha[:12]} tracks {tracked[0]}: {STATE_DIR}/ is the action's state on the host (its lock, journal "
                "and switch marker), never the repository's",
                f"remove it from the repository: git rm -r --cached {STATE_DIR}, and commit",
            )
        added = [p for p in added_out.split("\0") if p and p != set_aside]
        if not added:
            return
        items = {f"f:{p}": None for p in added} | {f"d:{d}": None for p in added for d in parents(p)}
        result = await self.host.run(commands.paths_in_the_way(app), input="\0".join(items))
        flagged = [item for item in result.stdout.split("\0") if item]
        in_the_way = await self.lost_by_checkout(flagged)
        written = await self.written_by_cut_short(in_the_way)
        in_the_way = [p for p in in_the_way if p not in written]
        if in_the_way:
            raise DeployError(
                f"checking out {sha[:12]} would overwrite what the host has and git does not track, in {app}: "
                f"{first_few(in_the_way)}; nothing was changed",
                "if the host's copy must stay (a .env with production values), remove the path from the repository "
                "(git rm --cached PATH, add it to .gitignore) and deploy again; if the commit's copy should win, move "
                "the host's copy out of app-dir first",
            )

    async def lost_by_checkout(self, flagged: Sequence[str]) -> list[str]:
        """Of what IN_THE_WAY_SCRIPT flagged, what git would lose: not a tracked path changing type (a
        tracked file becoming a folder, a folder of tracked files becoming a file: git handles those),
        but an untracked or ignored file in the way, or in a folder the checkout turns into a file."""
        if not flagged:
            return []
        paths = [item[2:] for item in flagged]
        tracked_out, untracked_out = await asyncio.gather(
            checked(self.host, commands.git_tracked(self.app, paths), "listing tracked paths", "check the clone"),
            checked(self.host, commands.git_untracked(self.app, paths), "listing untracked paths", "check the clone"),
        )
        tracked = {p for p in tracked_out.split("\0") if p}
        untracked = sorted(p for p in untracked_out.split("\0") if p)
        lost = []
        for item in flagged:
            kind, path = item[0], item[2:]
            if kind == "d" and path in tracked:
                continue  # a tracked file or link where the commit has a folder: git replaces it
            inside = [p for p in untracked if p == path or p.startswith(path + "/")]
            if kind == "f" and not inside and any(p.startswith(path + "/") for p in tracked):
                continue  # a folder of tracked files where the commit has a file: git replaces it
            lost += inside or [path]
        return sorted(dict.fromkeys(lost))

    async def changes(self, exempt: set[str]) -> list[str]:
        """Tracked files changed on the host (edited, deleted, or staged, added ones too), but for the
        action's own (`exempt`, and everything in its state folder)."""
        out = await checked(
            self.host, commands.git_changes(self.app), "listing the host's changes", f"check the clone in {self.app}"
        )
        paths = [entry[3:] for entry in out.split("\0") if len(entry) > 3]
        return [p for p in dict.fromkeys(paths) if p not in exempt and not p.startswith(STATE_DIR + "/")]

    @property
    def marker(self) -> str:
        """Names the commits checkouts were under way to, until one has ended: git moves HEAD last, so
        a checkout cut short (a cancel, a fleet's halt, a dead runner) leaves files of its commit that
        `git status` shows as changes, and they are the action's own, not hand edits. A line per
        checkout begun, `<HEAD then> <commit>`: a checkout that fails at once (a stale index.lock)
        adds its line and never hides what an earlier one left."""
        return posixpath.join(self.app, STATE_DIR, "checkout")

    async def begun(self) -> tuple[str, str]:
        """The marker's text ("" if there is none) and the commit checked out now."""
        marker, head = await asyncio.gather(self.host.run(commands.read_file(self.marker), check=False), self.head())
        return (marker.stdout if marker.ok else ""), head

    async def cut_short(self) -> list[str]:
        """The commits earlier checkouts were under way to when they were cut short (none if no
        checkout was, or if the last one did end: HEAD moved to its commit, so the whole tree is that
        commit's and the marker is only a leftover of a run that died before removing it)."""
        text, head = await self.begun()
        lines = [line.split() for line in text.splitlines()]
        begun = [(f[0] if len(f) == 2 else "", f[-1]) for f in lines if f and FULL_SHA.match(f[-1])]
        if not begun:
            return []
        then, last = begun[-1]
        return [] if head == last and then != last else list(dict.fromkeys(sha for _, sha in begun))

    async def own_half_checkout(self, changed: list[str]) -> list[str]:
        """Of `changed`, the files no earlier checkout cut short wrote: those that are none of the
        commits' it was checking out, in content and kind; a file missing from the work tree is one
        it removed, to write anew or for good (all of them, if no checkout was cut short). Read with
        hash-object and ls-tree: never a command that refreshes, and so rewrites, the index."""
        earlier = await self.cut_short() if changed else []
        if not earlier:
            return changed
        blobs, committed = await self.compare_with(changed, earlier)
        return [p for p in changed if blobs.get(p) and (p, blobs[p]) not in committed]

    async def written_by_cut_short(self, paths: list[str]) -> set[str]:
        """Of `paths` (untracked on the host), those an earlier checkout cut short wrote: the same
        content, and the same kind (a file, an executable, a symlink), as a commit it was checking
        out has there."""
        earlier = await self.cut_short() if paths else []
        if not earlier:
            return set()
        blobs, committed = await self.compare_with(paths, earlier)
        return {p for p in paths if blobs.get(p) and (p, blobs[p]) in committed}

    async def compare_with(
        self, paths: list[str], commits: Sequence[str]
    ) -> tuple[dict[str, str], set[tuple[str, str]]]:
        """What the work tree has at each of `paths` (`<kind> <blob id>`, "" where there is nothing),
        and the (path, `<kind> <blob id>`) pairs `commits` have there."""
        hashes, *trees = await asyncio.gather(
            self.host.run(commands.git_hash_files(self.app, paths), check=False),
            *(self.host.run(commands.git_blobs_at(self.app, sha, paths), check=False) for sha in commits),
        )
        committed: set[tuple[str, str]] = set()
        for tree in trees:
            for entry in tree.stdout.split("\0"):
                if "\t" in entry:
                    meta, path = entry.split("\t", 1)
                    kind = {"120000": "l", "100755": "x"}.get(meta.split()[0], "f")
                    committed.add((path, f"{kind} {meta.split()[-1]}"))
        found = [line if len(line) > 2 else "" for line in hashes.stdout.split("\n")]
        return dict(zip(paths, found, strict=False)), committed

    async def keep_changes(self, sha: str, exempt: set[str], run: str) -> str:
        """Before a checkout of `sha` discards them: the host's changes to tracked files, as
        host-changes says: refused (DeployError, nothing changed), stashed, or discarded. Returns
        what was done with them ("" if there were none)."""
        changed = await self.own_half_checkout(await self.changes(exempt))
        if not changed:
            return ""
        shown = first_few(changed)
        mode = self.cfg.host_changes
        if mode == "refuse":
            raise DeployError(
                f"checking out {sha[:12]} would discard changes made on the host to tracked files in {self.app}: "
                f"{shown}; nothing was changed",
                "commit them to the repository, or stash them on the host (git stash), then deploy again; or set "
                "host-changes: stash (kept in a stash) or discard",
            )
        if mode == "discard":
            return f"discarded the host's changes to {shown}"
        message = f"bluegreen: host changes before {sha[:12]}" + (f" ({run})" if run else "")
        await checked(
            self.host,
            commands.git_stash(self.app, message, changed),
            "stashing the host's changes",
            f"commit or stash them by hand in {self.app}",
        )
        stash = (await self.host.run(commands.git_stash_top(self.app), check=False)).stdout.strip()
        return f"stashed the host's changes to {shown} as {stash[:12]} ('{message}'; git stash list shows it)"

    async def checkout(self, sha: str) -> None:
        """Check `sha` out (forced: keep_changes has dealt with what the host changed), between the
        marker's write and its removal."""
        begun, head = await self.begun()
        begun += "\n" if begun and not begun.endswith("\n") else ""  # a torn line stays a line of its own
        line = f"{head or '-'} {sha}\n"
        if not begun.endswith(line):  # a checkout retried after failing at once adds no second line
            kept = begun.splitlines(keepends=True)[-(MARKER_LINES - 1) :]  # the files of older ones count as edits
            await self.host.run(commands.write_state(self.marker), input="".join(kept) + line)
        await checked(
            self.host,
            commands.git_checkout(self.app, sha),
            f"git checkout {sha[:12]}",
            f"check the work tree in {self.app}",
        )
        await self.host.run(commands.remove_file(self.marker))


def relative_to(app_dir: str, path: str) -> str:
    """`path` (absolute) relative to app-dir, or "" if it is outside."""
    return path[len(app_dir) + 1 :] if path.startswith(app_dir + "/") else ""
