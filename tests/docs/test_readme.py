"""The README and docs/ say only what is true: their commands parse, their files, names, exit
codes and image tag exist, the recipes name the files they touch, and nothing cites what a
reader cannot look up (issue numbers, files outside the repository)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from components.cli import all_commands, build_parser
from components.common.errors import CheckFailed, ConfigError, DataError
from components.trainer_command.flags import OVERRIDES
from tests.recipes.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = {path.name: path.read_text() for path in sorted((ROOT / "docs").glob("*.md"))}
PAGES = {"README.md": README, **{f"docs/{name}": text for name, text in DOCS.items()}}
TOP_LEVEL = ("components/", "pipeline/", "configs/", "docker/", "manifests/", "tests/", "benchmarks/",
             "docs/", ".ci/")
SOURCES = [*ROOT.glob("components/**/*.py"), *ROOT.glob("pipeline/**/*.py"), *ROOT.glob("configs/**/*.yaml"),
           *ROOT.glob("benchmarks/*.py"), ROOT / "Makefile", ROOT / "pyproject.toml",
           *ROOT.glob("tests/recipes/*.py")]  # the recipes' examples are performed there
SOURCE_NAMES = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", "\n".join(path.read_text() for path in SOURCES)))


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)


def recap_commands(text: str) -> list[list[str]]:
    """Every `recap ...` line of the code blocks, continuations joined, comments and [optional] parts dropped."""
    commands = []
    for block in code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            if not line.startswith("recap "):
                continue
            line = re.sub(r"\[[^\]]*\]", "", line)
            line = re.sub(r'"?\$[A-Z_]+"?', "X", line)
            commands.append(shlex.split(line)[1:])
    return commands


@pytest.mark.parametrize("argv", recap_commands(README), ids=" ".join)
def test_every_recap_command_in_the_readme_parses(argv):
    try:
        build_parser(argv).parse_args(argv)
    except SystemExit as exit:
        assert exit.code == 0 and "--help" in argv, f"recap {' '.join(argv)}"


def test_the_cli_section_lists_every_subcommand():
    listed = re.search(r"`recap --help` lists every subcommand \((.*?)\)", README, flags=re.S).group(1)
    named = {" ".join(c.path) for c in all_commands()}
    mentioned = set(re.findall(r"`([a-z -]+(?:\|[a-z|]+)?)`", listed))
    expanded = set()
    for item in mentioned:
        head, _, alternatives = item.rpartition(" ")
        expanded |= {f"{head} {a}".strip() for a in alternatives.split("|")}
    assert expanded == named


def test_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):", makefile, flags=re.M))
    mentioned = set(re.findall(r"\bmake ([a-z][a-z-]*)", README))
    assert mentioned and mentioned <= targets, mentioned - targets


def test_exit_codes_are_the_ones_the_router_maps():
    stated = dict(re.findall(r"\*\*(\d)\*\*\s+([a-z]+)", README))
    assert stated == {"0": "ok", "1": "a", "2": "usage"}
    assert CheckFailed.exit_code == DataError.exit_code == 1 and ConfigError.exit_code == 2


def backticked(text: str) -> list[str]:
    return [t for block in re.findall(r"`([^`\n]+)`", text) for t in block.split()]


@pytest.mark.parametrize("page", PAGES)
def test_every_repository_path_named_exists(page):
    text = PAGES[page]
    named = set(backticked(text)) | set(re.findall(r"\]\(([^)#]+)", text))
    missing = []
    for token in named:
        token = token.strip(".,;:()'\"").removeprefix("../")
        if not token.startswith(TOP_LEVEL) and token not in ("Makefile", "pyproject.toml", "BENCHMARKS.md"):
            continue
        if any(c in token for c in "<*…"):
            continue
        options = re.match(r"(.*)\{([^}]*)\}(.*)", token)
        paths = [f"{options[1]}{o}{options[3]}" for o in options[2].split(",")] if options else [token]
        missing += [p for p in paths if not (ROOT / p.split("::")[0]).exists()]
    assert missing == []


@pytest.mark.parametrize("page", PAGES)
def test_every_snake_case_name_named_exists_in_the_code_or_configs(page):
    """No anomaly code, config field, flag or parameter that does not exist (a renamed code, say)."""
    names = {t.strip(".,;:()'\"=") for t in backticked(PAGES[page])}
    names = {n.split("=")[0].split(":")[0].lstrip("-") for n in names}
    snake = {n for n in names if re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)+", n)}
    assert sorted(n for n in snake if n not in SOURCE_NAMES) == []


def test_the_recipes_name_the_files_their_tests_touch():
    section = README.split("## How to change it", 1)[1].split("\n## ", 1)[0]
    recipes = dict(re.findall(r"^### (.+?)\n\nFiles: (.+)$", section, flags=re.M))
    assert set(recipes) == set(RECIPES)
    for name, line in recipes.items():
        files = re.findall(r"`([^`]+)`", line)
        assert sorted(files) == sorted(RECIPES[name]) and len(files) <= 3, name
        assert all((ROOT / f).exists() for f in files), name


def test_one_image_tag_and_one_test_time():
    from pipeline.images import DEFAULT_TAG

    tags = set(re.findall(r"recap-[a-z]+:(\d+\.\d+\.\d+)", README)) | set(re.findall(r"RECAP_IMAGE_TAG=(\S+)", README))
    assert tags == {DEFAULT_TAG}
    assert len(re.findall(r"about \d+ minutes", README)) == 1


def test_no_issue_numbers_no_outside_files_no_history():
    for page, text in PAGES.items():
        assert not re.findall(r"(?<![&\w])#\d+\b", text), page
        assert "DESIGN.md" not in text and "REFERENCE.md" not in text, page
        assert not re.findall(r"\b(until|since|as of) \d{4}-\d{2}-\d{2}", text), page


def test_the_trainer_flag_table_is_the_declared_one():
    table = re.findall(r"^\| `--([a-z_]+)` \| `([a-z_.]+)` \|$", DOCS["steps.md"], flags=re.M)
    assert table == [(flag.name, flag.config_field) for flag in OVERRIDES]


def test_the_bad_data_table_says_what_the_corpus_shows():
    """Each rule code in the README's "When the data is bad" table has the exit code the bad-input
    corpus (tests/common/test_contract_corpus.py, which runs validate and convert) asserts for it."""
    import re

    from components.common.contract import RULES
    from tests.common.test_contract_corpus import CASES

    text = README.split("## When the data is bad", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| Cause")]
    table: dict[str, int] = {}
    for row in rows:
        exit_code = int(row.split("|")[2])
        for code in re.findall(r"\[(\w+)\]", row):
            table[code] = exit_code
    assert set(table) >= set(RULES), sorted(set(RULES) - set(table))
    for case in CASES:
        if case.code is not None:
            assert table[case.code] == case.exit_code, case.name
    assert "| input path does not exist | 2 |" in text and any(c.exit_code == 2 for c in CASES)
