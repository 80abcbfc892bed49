"""The constant shell scripts the action sends to the host, run for real here (sh, coreutils, flock)
on files in a temporary folder: the state files are never written through a symlink, a torn journal
line never swallows the next record, a checkout's way is checked, and the lock holds while the run
beats and lets go when it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from bluegreen import commands


def run(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)


def test_a_state_file_replaces_a_symlink_a_commit_put_there_and_never_writes_through_it(tmp_path: Path) -> None:
    keys = tmp_path / "authorized_keys"
    keys.write_text("ssh-ed25519 AAAA deploy\n")
    active = tmp_path / ".active_env"
    active.symlink_to(keys)
    assert run(commands.write_state(str(active)), "blue\n").returncode == 0
    assert keys.read_text() == "ssh-ed25519 AAAA deploy\n"
    assert not active.is_symlink() and active.read_text() == "blue\n"
    assert active.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == [".active_env", "authorized_keys"]  # no temp file left


def test_a_journal_append_after_a_torn_line_is_a_line_of_its_own_and_a_symlink_is_refused(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    journal.write_text('{"result": "success"}\n{"result": "swi')
    assert run(commands.append_line(str(journal)), '{"result": "switched"}\n').returncode == 0
    assert journal.read_text() == '{"result": "success"}\n{"result": "swi\n{"result": "switched"}\n'
    assert run(commands.append_line(str(journal)), '{"result": "success"}\n').returncode == 0
    assert journal.read_text().endswith('{"result": "switched"}\n{"result": "success"}\n')
    target = tmp_path / "target"
    target.write_text("x\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    refused = run(commands.append_line(str(link)), "y\n")
    assert refused.returncode == 3 and "symlink" in refused.stderr and target.read_text() == "x\n"


def test_the_state_folder_must_be_the_actions_own_with_no_symlink_in_it(tmp_path: Path) -> None:
    made = tmp_path / "app/.bluegreen"
    assert run(commands.make_state_dir(str(made))).returncode == 0
    assert (made / ".gitignore").read_text() == "*\n"
    (tmp_path / "elsewhere").mkdir()
    linked = tmp_path / "linked"
    linked.symlink_to(tmp_path / "elsewhere")
    assert run(commands.make_state_dir(str(linked))).returncode == 3
    (made / "lock").symlink_to(tmp_path / "elsewhere/lock")
    refused = run(commands.make_state_dir(str(made)))
    assert refused.returncode == 3 and "lock is a symlink" in refused.stderr


def test_what_is_in_a_checkouts_way(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to("/nonexistent")
    items = ["f:file", "f:absent", "f:dir", "f:link", "f:with space", "d:dir", "d:file", "d:link", "d:absent"]
    (tmp_path / "with space").write_text("x")
    result = run(commands.paths_in_the_way(str(tmp_path)), "\0".join(items))
    assert result.returncode == 0
    flagged = sorted(p for p in result.stdout.split("\0") if p)
    assert flagged == ["d:file", "d:link", "f:dir", "f:file", "f:link", "f:with space"]
    assert run(commands.paths_in_the_way(str(tmp_path)), "").stdout == ""


def take(state: Path, silence: int) -> tuple[subprocess.Popen[str], commands.Holder]:
    holder = subprocess.Popen(
        commands.hold_lock(str(state), silence),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as an SSH session's commands have
    )
    assert holder.stdout is not None
    word, _, token = holder.stdout.readline().strip().partition(" ")
    assert word == "locked", token
    return holder, commands.Holder(str(state), token)


def guarded(argv: list[str], holder: commands.Holder, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """A command of the run, as Remote.run sends it (tied to the session unless it takes stdin)."""
    line = commands.shell_line(argv, 30, tied=stdin is None, holder=holder)
    return subprocess.run(["sh", "-c", line], input=stdin, capture_output=True, text=True, timeout=30)


def free(state: Path) -> bool:
    """Whether another deploy could take the lock now (it lets go of it at once if so)."""
    return run(commands.hold_lock(str(state), 1), "").stdout.startswith("locked ")


def test_the_lock_holds_while_the_run_beats_and_lets_go_when_the_beats_stop(tmp_path: Path) -> None:
    silence = 1
    holder, named = take(tmp_path, silence)
    assert holder.stdin is not None
    pid = named.token.split()[0]
    assert Path(f"/proc/{pid}").exists() and (tmp_path / "holder").read_text() == f"{named.token}\n"
    started = time.monotonic()
    while time.monotonic() - started < 3 * silence:  # beats for three silences: still held
        holder.stdin.write("\n")
        holder.stdin.flush()
        time.sleep(silence / 4)
        assert holder.poll() is None
        assert not free(tmp_path)  # a second deploy cannot take it
    assert "held " + named.token in run(commands.lock_state(str(tmp_path))).stdout
    holder.wait(timeout=silence + 5)  # the beats stop: the holder lets go within a silence
    assert run(commands.lock_state(str(tmp_path))).stdout.strip() == "free"
    assert free(tmp_path)
    assert not Path(f"/proc/{pid}").exists() and not (tmp_path / "holder").exists()


def test_the_lock_lets_go_at_once_when_the_session_ends(tmp_path: Path) -> None:
    holder, _ = take(tmp_path, 60)
    assert holder.stdin is not None
    holder.stdin.close()  # EOF: released, or the SSH session ended
    assert holder.wait(timeout=5) == 0
    assert free(tmp_path)


def test_a_command_of_the_run_runs_only_while_its_holder_holds_the_lock(tmp_path: Path) -> None:
    """Every command, stdin-fed ones too, checks in its own shell, before it does anything, that the
    holder that names itself in the state folder is this run's, by pid and start time."""
    target = tmp_path / "upstream.conf"
    holder, named = take(tmp_path, 60)
    assert guarded(["sh", "-c", 'cat > "$0"', str(target)], named, "green\n").returncode == 0
    assert target.read_text() == "green\n"
    pid, start = named.token.split()
    for forged in (f"{pid} {int(start) + 1}", f"{os.getpid()} {start}"):  # a reused pid; another process
        refused = guarded(["sh", "-c", 'cat > "$0"', str(target)], commands.Holder(str(tmp_path), forged), "blue\n")
        assert refused.returncode == commands.LOCK_LOST_STATUS and commands.LOCK_LOST_MARK in refused.stderr
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=5)
    for argv, stdin in ((["sh", "-c", 'cat > "$0"', str(target)], "blue\n"), (["rm", "-f", str(target)], None)):
        refused = guarded(argv, named, stdin)
        assert refused.returncode == commands.LOCK_LOST_STATUS and commands.LOCK_LOST_MARK in refused.stderr
    assert target.read_text() == "green\n"  # the lapsed run changed nothing


def test_the_holder_lets_go_only_once_every_command_of_its_run_has_ended(tmp_path: Path) -> None:
    """A lapse while commands run: the lock stays taken until the last of them ends, so none ever
    runs beside the next deploy (however close to the lapse it began)."""
    holder, named = take(tmp_path, 1)
    line = commands.shell_line(
        ["sh", "-c", ': > "$0.started"; sleep 2; date +%s.%N > "$0"', str(tmp_path / "done-{n}")],
        30,
        tied=True,
        holder=named,
    )
    running = [subprocess.Popen(["sh", "-c", line.replace("{n}", str(n))], stdin=subprocess.PIPE) for n in range(20)]
    assert holder.stdin is not None
    while len(list(tmp_path.glob("*.started"))) < 20:  # the run beats until all 20 have begun
        holder.stdin.write("\n")
        holder.stdin.flush()
        time.sleep(0.05)
    holder.wait(timeout=10)  # then no beat: it lapses, but lets go only once all 20 ended
    taken = time.time()
    assert free(tmp_path)
    for process in running:
        assert process.wait(timeout=10) == 0
    finished = [float((tmp_path / f"done-{n}").read_text()) for n in range(20)]
    assert max(finished) <= taken
    late = guarded(["touch", str(tmp_path / "late")], named)
    assert late.returncode == commands.LOCK_LOST_STATUS and not (tmp_path / "late").exists()


def test_a_tied_command_stops_when_the_session_ends(tmp_path: Path) -> None:
    """A run's commands never outlive its session (EOF on their input)."""
    ended = subprocess.Popen(["sh", "-c", commands.shell_line(["sleep", "60"], 120, tied=True)], stdin=subprocess.PIPE)
    assert ended.stdin is not None
    time.sleep(0.5)
    assert ended.poll() is None
    ended.stdin.close()  # the session ends
    assert ended.wait(timeout=10) != 0


def test_a_holder_killed_outright_lets_no_new_holder_in_while_its_runs_commands_still_run(tmp_path: Path) -> None:
    """The holder's shell is killed (OOM, an admin's kill), so the kernel drops the lock at once, while a
    command of its run still runs: no new deploy takes the lock until that command has ended."""
    holder, named = take(tmp_path, 60)
    line = commands.shell_line(
        ["sh", "-c", ': > "$0.started"; sleep 6', str(tmp_path / "slow")], 30, tied=True, holder=named
    )
    running = subprocess.Popen(["sh", "-c", line], stdin=subprocess.PIPE)
    wait_until = time.monotonic() + 10
    while not (tmp_path / "slow.started").exists() and time.monotonic() < wait_until:
        time.sleep(0.02)
    os.killpg(holder.pid, signal.SIGKILL)  # the holder, and (its input closed) the beat reader it left
    holder.wait(timeout=5)
    assert holder.stdin is not None
    holder.stdin.close()
    gone = time.monotonic() + 10
    while Path(f"/proc/{named.token.split()[0]}").exists() and time.monotonic() < gone:  # reaped by init
        time.sleep(0.02)
    assert not free(tmp_path)  # the lock file is free, but a command of the dead holder's run still runs
    assert run(commands.lock_state(str(tmp_path))).stdout.strip() == "held letting-go"  # status says so too
    assert running.wait(timeout=10) == 0
    assert run(commands.lock_state(str(tmp_path))).stdout.strip() == "free"
    assert free(tmp_path)
