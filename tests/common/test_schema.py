from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from components.common.errors import SchemaError
from components.common.schema import Role, load_schema, schema_path

LABELS = 13
TASKS = 10


@pytest.mark.parametrize(("variant", "widths"), [("local", (64, 16, 8, 16)), ("prod", (6000, 512, 320, 200))])
def test_bundled_variants(variant: str, widths: tuple[int, int, int, int]) -> None:
    schema = load_schema(variant)
    assert (
        schema.group(Role.CONTINUOUS).length, schema.group(Role.BINARY).length,
        schema.group(Role.DISCRETE).length, schema.embeddings[0].length,
    ) == widths
    assert len(schema.embeddings) == 3 and len(schema.ids) == 3
    assert len(schema.labels) == LABELS and len(schema.tasks) == TASKS
    dropped = {"is_bookmarked", "is_shared", "is_tweet_detail_dwelled_15_sec"}
    assert set(schema.task_names) == {f.name for f in schema.labels} - dropped


def test_local_and_prod_share_names_and_roles() -> None:
    local, prod = load_schema("local"), load_schema("prod")
    assert [(f.name, f.role, f.feature, f.column) for f in local] == [(f.name, f.role, f.feature, f.column) for f in prod]
    assert local.task_names == prod.task_names
    assert local.hash != prod.hash


def test_raw_arrow_schema() -> None:
    schema = load_schema("local")
    arrow = schema.raw_arrow_schema()
    assert arrow.field("continuous").type == pa.list_(pa.float32(), 64)
    assert arrow.field("binary").type == pa.list_(pa.int8(), 16)
    assert arrow.field("user_id").type == pa.int64()
    assert arrow.field("is_favorited").type == pa.int8()


def test_hash_is_stable_and_sensitive(tmp_path) -> None:
    data = yaml.safe_load(Path(schema_path("local")).read_text())
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_schema(path).hash == load_schema("local").hash
    data["features"][0]["length"] = 65
    path.write_text(yaml.safe_dump(data))
    assert load_schema(path).hash != load_schema("local").hash


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["features"][1].update(dtype="float32"), r"features\.1 \(binary\): role binary needs dtype int64"),
        (lambda d: d["features"][7].update(length=2), r"role id needs length 1"),
        (lambda d: d["features"].append(dict(d["features"][0])), r"duplicate feature name: continuous"),
        (lambda d: d["tasks"].append({"label": "is_nothing"}), r"tasks\.10\.label: 'is_nothing' is not a label"),
        (lambda d: d["features"].pop(2), r"exactly one discrete feature group, found 0"),
        (lambda d: d["features"][0].update(raw_type="int8"), r"raw_type int8 does not fit dtype float32"),
        (lambda d: d["features"][0].update(role="sparkly"), r"features\.0\.role"),
        (lambda d: d["tasks"][0].update(neg_downsampling_rate=0), r"tasks\.0\.neg_downsampling_rate"),
    ],
)
def test_bad_schema_errors_name_the_field(tmp_path, mutate, message: str) -> None:
    data = yaml.safe_load(Path(schema_path("local")).read_text())
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SchemaError, match=message) as info:
        load_schema(path)
    assert str(path) in str(info.value)


def test_unknown_variant_lists_bundled_ones() -> None:
    with pytest.raises(SchemaError, match=r"schema not found \(bundled variants: local, prod\)"):
        load_schema("staging")
