"""Each workflow command in its canonical form: no space before `::` (nektos/act and the Gitea and
Forgejo runners read nothing else), messages and properties escaped as the runners unescape them."""

from __future__ import annotations

import re

from bluegreen import workflow

CANONICAL = re.compile(r"^::[a-z-]+(?: [a-z]+=[^,:]*(?:,[a-z]+=[^,:]*)*)?::")


def test_add_mask() -> None:
    assert workflow.add_mask("b3BlbnNzaC1rZXk+/=") == "::add-mask::b3BlbnNzaC1rZXk+/="


def test_group_and_endgroup() -> None:
    assert workflow.group("Build and start blue") == "::group::Build and start blue"
    assert workflow.endgroup() == "::endgroup::"


def test_stop_and_resume_commands() -> None:
    assert workflow.stop_commands("0f1e2d") == "::stop-commands::0f1e2d"
    assert workflow.resume_commands("0f1e2d") == "::0f1e2d::"


def test_warning_and_error_carry_an_escaped_title() -> None:
    assert workflow.warning("drift", "Live color drift") == "::warning title=Live color drift::drift"
    assert (
        workflow.error("a: b, c", "Deploy failed at Switch: x, y")
        == "::error title=Deploy failed at Switch%3A x%2C y::a: b, c"
    )


def test_messages_cannot_break_out_of_their_line() -> None:
    line = workflow.error("100% broken\r\n::set-output name=x::y", "t")
    assert line == "::error title=t::100%25 broken%0D%0A::set-output name=x::y"
    assert "\n" not in line


def test_every_command_is_canonical() -> None:
    lines = [
        workflow.add_mask("x"),
        workflow.group("g"),
        workflow.endgroup(),
        workflow.stop_commands("t"),
        workflow.warning("m", "t"),
        workflow.error("m", "t"),
    ]
    assert all(CANONICAL.match(line) for line in lines), lines
