"""The error a deploy step raises: what failed, how to fix it, and the host's output if there was any."""

from __future__ import annotations


class DeployError(RuntimeError):
    def __init__(self, message: str, fix: str = "", output: str = "", what: str = "") -> None:
        self.fix = fix
        self.output = output  # what the failing host command printed, shown between stop-commands markers
        self.what = what
        super().__init__(message)
