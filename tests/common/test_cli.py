"""The `recap` entry point as users run it: a real subprocess of the installed console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components.cli import STEPS, all_commands, build_parser

COMMANDS = all_commands()

RECAP = str(Path(sys.executable).parent / "recap")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECAP, *args], capture_output=True, text=True, timeout=120)


def test_the_upper_layer_registers_its_commands_through_entry_points() -> None:
    registered = [c for c in COMMANDS if c not in STEPS]
    assert [c.path for c in registered] == [("pipeline", "compile"), ("pipeline", "run"), ("pipeline", "submit")]
    assert {c.module for c in registered} == {"pipeline.cli"}


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
    argv = [*command.path, "--help"]
    with pytest.raises(SystemExit) as info:
        build_parser(argv).parse_args(argv)
    assert info.value.code == 0


# What each CPU image lacks (pyproject extras): torch and TensorFlow only come with train/evaluate.
BLOCK = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # `import name` now raises ModuleNotFoundError, as in a slim image
from components.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_without(packages: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK, packages, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("step", [("validate",), ("convert",), ("data", "generate"), ("launch",), ("push",)])
def test_cpu_image_steps_start_without_torch_or_tensorflow(step) -> None:
    result = run_without("torch,tensorflow,torchrec", *step, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"recap {' '.join(step)}" in result.stdout


def test_a_step_whose_packages_are_missing_says_which_extra_to_install() -> None:
    result = run_without("torch,torchrec", "train", "--help")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "recap: error: `recap train` needs the Python package 'torch', which is not installed here "
        "(pip install 'recap-pipeline[train]', or use the recap-train image)"
    ]


def test_log_level_is_case_insensitive_and_checked() -> None:
    assert run("data", "generate", "--help", "--log-level", "debug").returncode == 0
    bad = run("data", "generate", "--log-level", "loud")
    assert bad.returncode == 2 and "invalid choice: 'LOUD'" in bad.stderr


def test_missing_config_path_exits_2_with_one_line_naming_it() -> None:
    result = run("validate", "--config_path=/nonexistent.yaml")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["recap validate: error: /nonexistent.yaml: config file not found"], result.stderr


def test_usage_error_exits_2() -> None:
    result = run("no-such-step")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_an_unexpected_error_is_one_line_and_its_traceback_shows_only_at_debug(monkeypatch, capsys):
    """A bug (not one of our domain errors) prints one line with exit 1; --log-level DEBUG re-raises it."""
    import logging

    import components.convert.cli as convert_cli
    from components.cli import main

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(convert_cli, "run", broken)
    root = logging.getLogger()
    try:
        assert main(["convert", "--input", "x", "--out", "y"]) == 1
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1] == ("recap convert: error: unexpected ZeroDivisionError: division by "
                                                "zero (--log-level DEBUG shows the traceback)")
        assert "Traceback" not in err
        with pytest.raises(ZeroDivisionError):
            main(["convert", "--input", "x", "--out", "y", "--log-level", "DEBUG"])
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_recap", False)]:
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)
