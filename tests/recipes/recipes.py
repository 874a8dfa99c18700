"""The README's "How to change it" recipes: the files each one touches (tests/docs checks the
README names exactly these) and a way to perform them on a copy of the repository."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

RECIPES: dict[str, tuple[str, ...]] = {
    "Add a task": ("configs/schema/local.yaml", "configs/local.yaml", "configs/evaluate.yaml"),
    "Add an anomaly code": ("components/validate/anomalies.py", "components/validate/rules.py",
                            "components/validate/config.py"),
    "Change the blessing metric": ("configs/evaluate.yaml",),
    "Add a pipeline parameter": ("pipeline/dag.py", "pipeline/kfp_components.py"),
}


def copy_of(target: Path, *folders: str) -> Path:
    """A copy of these folders of the repository under `target` (sources only)."""
    for folder in folders:
        shutil.copytree(REPO_ROOT / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def insert(path: Path, anchor: str, text: str, after: bool = True) -> None:
    """Edit a file as a person would: put `text` next to the one place `anchor` stands."""
    source = path.read_text()
    assert source.count(anchor) == 1, f"{path}: the recipe's anchor {anchor!r} is not in one place any more"
    at = source.index(anchor) + (len(anchor) if after else 0)
    path.write_text(source[:at] + text + source[at:])


def changed_files(copy: Path, *folders: str) -> list[str]:
    """Files of `folders` that differ between the copy and the repository."""
    changed = []
    for folder in folders:
        for path in sorted((copy / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                relative = path.relative_to(copy)
                original = REPO_ROOT / relative
                if not original.exists() or original.read_bytes() != path.read_bytes():
                    changed.append(str(relative))
    return changed
