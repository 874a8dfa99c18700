"""The bad-input corpus for the steps that read converted splits: train and evaluate.

Both read through one reader (components.records.reader.read_batches): train repeating over its
shards, evaluate once. Per case, both get the same error, with the exit code the README's "When
the data is bad" table gives for the cause, naming the shard (and record and column where there
is one). Splits are generated here: a clean table converted, then broken.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common.errors import RecapError
from components.common.schema import load_schema
from components.convert import ConvertSettings
from components.convert import run as convert
from components.records.reader import ReaderOptions, read_batches
from tests.common.test_contract_corpus import EMB, _floats, _group, _replace, clean_table

SCHEMA = load_schema("local")
TASK_LABEL = "is_favorited"  # a label the model trains on (the reader checks the tasks' labels)
SHARD = r"/train/part-0000[01]-of-00002\.tfrecord\.gz"


def split_of(root: Path, table: pa.Table) -> Path:
    """`table` converted (2 shards, no eval rows) without convert's checks, as `--skip-checks` would."""
    (root / "raw").mkdir(parents=True)
    pq.write_table(table, root / "raw" / "part-0.parquet")
    convert(str(root / "raw"), SCHEMA, str(root / "data"),
            ConvertSettings(shards=2, workers=1, eval_fraction=0.0, check_values=False))
    return root / "data" / "train"


def labels_0_to_9(root: Path) -> Path:
    table = clean_table()
    index = table.schema.get_field_index(TASK_LABEL)
    field = table.schema.field(index)
    return split_of(root, table.set_column(index, field, pa.array(np.arange(len(table)) % 10, field.type)))


def inf_embedding(root: Path) -> Path:
    table = clean_table()
    values = _floats(EMB.column, table)
    values[31, 2] = np.inf
    return split_of(root, _replace(table, EMB.column, _group(EMB.name, values)))


def first_shard(split: Path) -> Path:
    return split / "part-00000-of-00002.tfrecord.gz"


def missing_shard(root: Path) -> Path:
    split = split_of(root, clean_table())
    first_shard(split).unlink()
    return split


def truncated_shard(root: Path) -> Path:
    split = split_of(root, clean_table())
    data = first_shard(split).read_bytes()
    first_shard(split).write_bytes(data[: len(data) // 2])
    return split


def damaged_with_its_manifest(root: Path) -> Path:
    """Bytes in the middle of a shard flipped and its manifest entry rewritten to match."""
    split = split_of(root, clean_table())
    data = bytearray(first_shard(split).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    first_shard(split).write_bytes(bytes(data))
    manifest = json.loads((split / "_MANIFEST.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == first_shard(split).name:
            entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (split / "_MANIFEST.json").write_text(json.dumps(manifest))
    return split


def empty_split(root: Path) -> Path:
    """A published split whose shards hold no record (convert refuses empty input, so it is made here)."""
    split = split_of(root, clean_table(rows=2))
    manifest = json.loads((split / "_MANIFEST.json").read_text())
    empty = gzip.compress(b"")
    for entry in manifest["files"]:
        (split / entry["path"]).write_bytes(empty)
        entry.update(records=0, bytes=len(empty), sha256=hashlib.sha256(empty).hexdigest())
    (split / "_MANIFEST.json").write_text(json.dumps(manifest))
    return split


def other_schema(root: Path) -> Path:
    """A split the reader is given with another schema than the one it was written for."""
    return split_of(root, clean_table())


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Path]
    exit_code: int
    message: str  # a regex the one-line error matches
    readme: str  # the cause column of the README row
    schema: str = "local"  # the schema the reader is given
    once_too: bool = True  # evaluate's single pass gets the same error


CASES = [
    Case("nonexistent_split", lambda root: root / "no-such-split", 2,
         r"no-such-split/_MANIFEST\.json: no manifest; the output is incomplete", "a split without `_MANIFEST.json`"),
    Case("missing_shard", missing_shard, 1, SHARD + r": listed in the manifest but missing",
         "a shard the manifest lists is gone"),
    Case("truncated_shard", truncated_shard, 1, SHARD + r": size \d+ bytes, manifest says \d+ \(truncated or replaced\)",
         "a shard truncated or replaced"),
    Case("damaged_with_its_manifest", damaged_with_its_manifest, 1, SHARD + r": cannot read TFRecord shard: ",
         "a shard damaged (even with its manifest entry rewritten)"),
    Case("labels_0_to_9", labels_0_to_9, 1, SHARD + rf": record \d+: column '{TASK_LABEL}' \(feature \S+\) has value "
         r"[2-9]\.0 \(labels are 0 or 1\) \[label_not_binary\]", "a bad label or embedding in converted shards"),
    Case("inf_in_embedding", inf_embedding, 1, SHARD + rf": record \d+: column '{EMB.column}' \(feature \S+\) has inf "
         r"at element 2 \(embeddings must be finite\) \[non_finite\]", "a bad label or embedding in converted shards"),
    Case("other_schema", other_schema, 2, SHARD + r": shards were written for schema local .* the reader was given "
         r"schema prod", "a split written for another schema", schema="prod"),
    Case("empty_training_split", empty_split, 1,
         r"/train: repeat=True but rank 0's 2 shards hold no records", "an empty training split", once_too=False),
]


def read_error(split: Path, schema: str, repeat: bool) -> RecapError:
    options = ReaderOptions(batch_size=16, repeat=repeat, shuffle=False)
    with pytest.raises(RecapError) as caught:
        for _, _batch in zip(range(40), read_batches(str(split), load_schema(schema), options), strict=False):
            pass
    return caught.value


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_train_and_evaluate_reads_fail_alike_on_each_bad_split(case: Case, tmp_path: Path) -> None:
    split = case.build(tmp_path)
    for repeat in (True, False) if case.once_too else (True,):
        error = read_error(split, case.schema, repeat)
        message = str(error)
        assert error.exit_code == case.exit_code, (repeat, message)
        assert "\n" not in message and re.search(case.message, message), (repeat, message)


@pytest.mark.integration
def test_a_reader_error_inside_tf_data_prints_no_traceback(tmp_path: Path) -> None:
    """TensorFlow logs an error raised in a tf.data generator with its Python traceback; our logging
    setup silences that below DEBUG, so a step's stderr holds only its one line."""
    split = truncated_shard(tmp_path)
    script = ("import sys\nfrom components.common.logs import setup_logging\nsetup_logging()\n"
              "from components.common.errors import RecapError\n"
              "from components.common.schema import load_schema\n"
              "from components.records.reader import ReaderOptions, read_batches\n"
              f"try:\n    list(read_batches({str(split)!r}, load_schema('local'), ReaderOptions(batch_size=16)))\n"
              "except RecapError as exc:\n    print(f'error: {exc}', file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2], env=env)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "manifest says" in done.stderr and "(truncated or replaced)" in done.stderr


def test_each_case_has_its_readme_row() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("## When the data is bad", 1)[1].split("\n## ", 1)[0]
    for case in CASES:
        rows = [line for line in table.splitlines() if line.startswith(f"| {case.readme}")]
        assert rows and rows[0].split("|")[2].strip() == str(case.exit_code), case.name
