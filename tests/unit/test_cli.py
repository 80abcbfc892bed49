"""The CLI's own surface, through main(): help for every subcommand, and --version."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

from bluegreen.cli import HELP_GROUPS, ask_passphrase, build_parser, main, raw_inputs
from bluegreen.config import INPUTS, load_config
from bluegreen.report import ConsoleReporter, StepRecord

from .test_config import raw


@pytest.mark.parametrize(
    "argv", [["--help"], ["deploy", "--help"], ["rollback", "--help"], ["plan", "--help"], ["status", "--help"]]
)
def test_help_works_for_every_subcommand(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: bluegreen")
    if argv[0] == "deploy":
        assert "--batch-size VALUE" in out and "(50%)" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("bluegreen 0.")


def test_an_unreadable_key_file_is_a_usage_error_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "--key-file", "/nonexistent/key"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "error: invalid option: --key-file: /nonexistent/key cannot be read (No such file or directory)" in err


def test_a_bad_flag_is_named_as_a_flag_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    flags = [part for name, value in raw(port="ssh").items() if name != "command" for part in (f"--{name}", value)]
    assert main(["deploy", *flags]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--port: 'ssh' is not a whole number" in err


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "bluegreen", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("bluegreen ")


def test_no_color_keeps_the_step_list_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    step = StepRecord("build", "Build and start blue", "ok", 1.5, "2 services")
    painted, plain = Tty(), Tty()
    ConsoleReporter([], painted).step_done(step)
    monkeypatch.setenv("NO_COLOR", "1")
    ConsoleReporter([], plain).step_done(step)
    assert "\033[" in painted.getvalue()
    assert "\033[" not in plain.getvalue() and "✓ Build and start blue (2 services) 1.5s" in plain.getvalue()


def test_a_bare_boolean_flag_means_true_and_times_take_units() -> None:
    args = build_parser().parse_args(
        ["deploy", "--insecure-skip-host-key-check", "--prune", "false", "--nginx-sudo", "--lock-timeout", "10m"]
    )
    inputs = raw_inputs(args, {})
    assert (inputs["insecure-skip-host-key-check"], inputs["prune"], inputs["nginx-sudo"]) == ("true", "false", "true")
    flags = {**raw(fingerprint=""), **{k: v for k, v in inputs.items() if v and k not in ("host", "username", "key")}}
    cfg = load_config(flags)
    assert cfg.insecure_skip_host_key_check and cfg.nginx_sudo and not cfg.prune and cfg.lock_timeout == 600


def test_every_missing_flag_is_named_at_once_in_cli_words(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("BLUEGREEN_") or n == "GITHUB_SHA"]:
        monkeypatch.delenv(name)
    assert main(["deploy", "--host", "web-1"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    for words in (
        "--username (or BLUEGREEN_USERNAME)",
        "--key-file PATH",
        "--app-dir",
        "--fingerprint or --known-hosts",
    ):
        assert words in err
    assert "--ref, a commit" in err and "with: block" not in err and "--host" not in err
    monkeypatch.setenv("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")  # any CI's commit: ref is given
    assert main(["deploy", "--host", "web-1"]) == 2
    assert "--ref" not in capsys.readouterr().err


def test_config_reads_the_settings_file_from_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in [n for n in os.environ if n.startswith("BLUEGREEN_") or n == "GITHUB_SHA"]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bluegreen.yml").write_text("host: web-1\nusername: deploy\napp-dir: /srv/app\n")
    assert main(["status", "--config", "bluegreen.yml"]) == 2
    err = capsys.readouterr().err
    assert "--key-file" in err and "--host" not in err and "--username" not in err and "--app-dir" not in err
    (tmp_path / "bluegreen.yml").write_text("hostname: web-1\n")
    assert main(["status", "--config", "bluegreen.yml"]) == 2
    assert "--config: bluegreen.yml sets 'hostname', which is no input" in capsys.readouterr().err


def test_secrets_and_pins_come_from_files_so_they_stay_off_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh/known_hosts").write_text("web-1 ssh-ed25519 AAAA\n")
    (tmp_path / "prod.env").write_text("DB_PASSWORD=s3cr3t-value\n")
    args = build_parser().parse_args(
        ["deploy", "--env-file", str(tmp_path / "prod.env"), "--known-hosts-file", "~/.ssh/known_hosts"]
    )
    inputs = raw_inputs(args, {})
    assert inputs["env"] == "DB_PASSWORD=s3cr3t-value\n" and inputs["known-hosts"] == "web-1 ssh-ed25519 AAAA\n"
    assert main(["deploy", "--env-file", str(tmp_path / "nowhere.env")]) == 2
    assert "--env-file: " in capsys.readouterr().err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_an_encrypted_key_is_asked_for_its_passphrase_on_a_terminal_only() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519").export_private_key(passphrase="pw").decode()
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return "pw"

    inputs = {"key": key, "passphrase": ""}
    ask_passphrase(inputs, io.StringIO(), ask)  # a pipe, a CI: never asked
    assert asked == [] and inputs["passphrase"] == ""
    ask_passphrase(inputs, Terminal(), ask)
    assert asked == ["Passphrase for the key: "] and inputs["passphrase"] == "pw"
    plain = {"key": asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode(), "passphrase": ""}
    ask_passphrase(plain, Terminal(), ask)
    assert len(asked) == 1 and plain["passphrase"] == ""


def test_a_key_given_twice_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert main(["deploy", "--key", "x", "--key-file", str(tmp_path / "key")]) == 2
    assert "--key-file: is given with --key too" in capsys.readouterr().err


def test_help_groups_every_flag_by_purpose_once(capsys: pytest.CaptureFixture[str]) -> None:
    grouped = [name for names in HELP_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(spec.name for spec in INPUTS if spec.name != "command")
    with pytest.raises(SystemExit):
        main(["deploy", "--help"])
    out = capsys.readouterr().out
    assert all(f"\n{title}:\n" in out for title in HELP_GROUPS)


def test_ssh_agent_needs_an_agent_and_no_key_beside_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    assert main(["deploy", "--ssh-agent"]) == 2
    assert "--ssh-agent: SSH_AUTH_SOCK is not set" in capsys.readouterr().err
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
    assert main(["deploy", "--ssh-agent", "--key", "a-key"]) == 2
    assert "--ssh-agent: is given with a key too" in capsys.readouterr().err
    for name in [n for n in os.environ if n.startswith("BLUEGREEN_")]:
        monkeypatch.delenv(name)
    assert main(["deploy", "--ssh-agent", "--host", "web-1"]) == 2
    assert "--key-file" not in capsys.readouterr().err  # the agent signs: no key is missing
