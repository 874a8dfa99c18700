"""The `recap` entry point as users run it: a real subprocess of the installed console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components.cli import COMMANDS, build_parser

RECAP = str(Path(sys.executable).parent / "recap")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECAP, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_subcommand() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert command.path[0] in result.stdout
    for group in ("data", "pipeline"):
        sub = run(group, "--help")
        assert sub.returncode == 0
        for command in COMMANDS:
            if command.path[0] == group:
                assert command.path[1] in sub.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c.path))
def test_every_subcommand_has_help(command) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*command.path, "--help"])
    assert info.value.code == 0


def test_missing_config_path_exits_2_with_one_line_naming_it() -> None:
    result = run("validate", "--config_path=/nonexistent.yaml")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["recap validate: error: /nonexistent.yaml: config file not found"], result.stderr


def test_usage_error_exits_2() -> None:
    result = run("no-such-step")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
