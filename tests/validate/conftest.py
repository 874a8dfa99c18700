"""Fixtures for validation tests: clean data from our own generator, and a way to write crafted files."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common.schema import load_schema
from components.datagen import generate


@pytest.fixture(scope="session")
def local_schema():
    return load_schema("local")


@pytest.fixture(scope="session")
def clean_data(tmp_path_factory, local_schema) -> str:
    """3000 clean rows in 2 files, with manifest and oracle, as the generator writes them."""
    out = str(tmp_path_factory.mktemp("clean") / "raw")
    generate(local_schema, out, rows=3_000, files=2, seed=1)
    return out


@pytest.fixture(scope="session")
def clean_table(clean_data) -> pa.Table:
    """One clean file's rows (1500), to mutate into crafted inputs."""
    return pq.read_table(f"{clean_data}/part-00000-of-00002.parquet")


@pytest.fixture
def write_files(tmp_path):
    """Write {name: Table | bytes} into a fresh directory (no manifest); returns the directory."""

    def write(files: dict[str, pa.Table | bytes]) -> str:
        root = tmp_path / "input"
        root.mkdir(exist_ok=True)
        for name, content in files.items():
            path = Path(root, name)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                pq.write_table(content, path)
        return str(root)

    return write
