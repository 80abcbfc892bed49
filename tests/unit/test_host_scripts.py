"""The constant shell scripts the action sends to the host, run for real here (sh, coreutils, flock)
on files in a temporary folder: the state files are never written through a symlink, a torn journal
line never swallows the next record, a checkout's way is checked, and the lock holds while the run
beats and lets go when it stops."""

from __future__ import annotations

import os
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


def test_the_lock_holds_while_the_run_beats_and_lets_go_when_the_beats_stop(tmp_path: Path) -> None:
    silence = 1
    lock = str(tmp_path / "lock")
    holder = subprocess.Popen(
        commands.hold_lock(lock, silence), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdin is not None
    word, pid = holder.stdout.readline().split()
    assert word == "locked" and Path(f"/proc/{pid}").exists()  # the holder says its pid: commands tie to it
    started = time.monotonic()
    while time.monotonic() - started < 3 * silence:  # beats for three silences: still held
        holder.stdin.write("\n")
        holder.stdin.flush()
        time.sleep(silence / 4)
        assert holder.poll() is None
        assert run(commands.hold_lock(lock, silence), "").returncode == 1  # a second deploy cannot take it
    holder.wait(timeout=silence + 5)  # the beats stop: the holder lets go within a silence
    assert run(commands.hold_lock(lock, silence), "").stdout.startswith("locked ")
    assert not Path(f"/proc/{pid}").exists()


def test_the_lock_lets_go_at_once_when_the_session_ends(tmp_path: Path) -> None:
    lock = str(tmp_path / "lock")
    holder = subprocess.Popen(commands.hold_lock(lock, 60), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().startswith("locked ")
    holder.stdin.close()  # EOF: released, or the SSH session ended
    assert holder.wait(timeout=5) == 0
    assert os.path.exists(lock)


def test_a_tied_command_stops_when_the_session_ends_or_the_locks_holder_is_gone(tmp_path: Path) -> None:
    """A run's commands never outlive it: not its session (EOF on their input), and not the lock's
    holder, which lets go when the run's beats stop while sshd may still keep a dead run's session."""
    holder = subprocess.Popen(["sleep", "60"])
    line = commands.shell_line(["sleep", "60"], 120, tied=True, holder=holder.pid)
    command = subprocess.Popen(["sh", "-c", line], stdin=subprocess.PIPE)
    assert command.stdin is not None
    time.sleep(0.5)
    assert command.poll() is None  # the session is open and the holder lives: it runs
    holder.kill()
    holder.wait()
    assert command.wait(timeout=10) != 0  # killed within the watcher's 2 s poll
    ended = subprocess.Popen(["sh", "-c", commands.shell_line(["sleep", "60"], 120, tied=True)], stdin=subprocess.PIPE)
    assert ended.stdin is not None
    ended.stdin.close()  # the session ends
    assert ended.wait(timeout=10) != 0
