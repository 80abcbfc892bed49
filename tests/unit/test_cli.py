"""The CLI's own surface, through main(): help for every subcommand, and --version."""

from __future__ import annotations

import pytest

from bluegreen.cli import main


@pytest.mark.parametrize("argv", [["--help"], ["deploy", "--help"], ["rollback", "--help"], ["status", "--help"]])
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
