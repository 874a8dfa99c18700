"""The push of a blessed model: versions copied whole, LATEST moved last, old versions kept."""

from __future__ import annotations

import pytest

from components.common import storage
from components.common.errors import CheckFailed, ConfigError, StorageError
from components.push import LATEST_FILE, PushConfig, push_model, run, serving_root


def test_push_copies_the_model_then_moves_latest(storage_root):
    model = storage.join(storage_root, "train/model")
    storage.write_text(storage.join(model, "weights.pt"), "w")
    storage.write_text(storage.join(model, "meta/schema.json"), "{}")
    serving = storage.join(storage_root, "serving")
    first = push_model(model, serving, "run-1")
    second = push_model(model, serving, "run-2", extra={"evaluation_uri": "gs://pr/eval"})
    assert first == f"{serving}/run-1" and second == f"{serving}/run-2"
    assert sorted(storage.relative_to(u, second) for u in storage.list_uris(second)) == ["meta/schema.json", "weights.pt"]
    latest = storage.read_json(f"{serving}/{LATEST_FILE}")
    assert latest["version"] == "run-2" and latest["model_uri"] == second and latest["files"] == 2
    assert latest["source_uri"] == model and latest["evaluation_uri"] == "gs://pr/eval"
    assert storage.list_uris(first)  # older versions stay for rollback


def test_push_refuses_an_empty_model_and_leaves_latest_alone(tmp_path):
    serving = str(tmp_path / "serving")
    storage.write_text(str(tmp_path / "model/weights.pt"), "w")
    push_model(str(tmp_path / "model"), serving, "v1")
    with pytest.raises(StorageError, match="empty: no model files to push"):
        push_model(str(tmp_path / "empty"), serving, "v2")
    assert storage.read_json(f"{serving}/LATEST")["version"] == "v1"
    assert not storage.list_uris(f"{serving}/v2")


def test_serving_root_defaults_under_the_data_root_and_needs_one_of_them():
    with pytest.raises(ConfigError, match="serving_uri"):
        serving_root("", "")
    assert serving_root("", "gs://b/r") == "gs://b/r/serving"
    assert serving_root("gs://serve/ranker/", "gs://b/r") == "gs://serve/ranker"


def blessed_evaluation(root: str, blessed: bool) -> str:
    """An evaluation output as evaluate publishes it: blessing.json, then the manifest."""
    from components.common.manifest import ManifestFile, write_manifest
    from components.evaluate.constants import BLESSING_FILE, MANIFEST_KIND

    uri = storage.join(root, "evaluation")
    sha = storage.write_json(storage.join(uri, BLESSING_FILE), {"blessed": blessed, "reason": "reply: auroc dropped"})
    write_manifest(uri, MANIFEST_KIND, "h", [ManifestFile(BLESSING_FILE, 1, storage.size(storage.join(uri, BLESSING_FILE)), sha)])
    return uri


def test_push_step_publishes_only_a_blessed_model(tmp_path):
    root = str(tmp_path)
    model = storage.join(root, "model")
    storage.write_text(storage.join(model, "weights.pt"), "w")
    serving = storage.join(root, "serving")
    with pytest.raises(CheckFailed, match="not blessed, not pushed .reply: auroc dropped"):
        run(model, blessed_evaluation(storage.join(root, "refused"), False), serving, PushConfig(version="v1"))
    assert not storage.list_uris(serving)
    target = run(model, blessed_evaluation(storage.join(root, "ok"), True), serving, PushConfig(version="v2"))
    assert storage.read_json(f"{serving}/{LATEST_FILE}")["model_uri"] == target == f"{serving}/v2"


def test_push_refuses_an_incomplete_evaluation(tmp_path):
    evaluation = blessed_evaluation(str(tmp_path), True)
    storage.delete(storage.join(evaluation, "_MANIFEST.json"))  # a crashed evaluate
    with pytest.raises(StorageError, match="no manifest"):
        run(str(tmp_path / "model"), evaluation, str(tmp_path / "serving"), PushConfig(version="v1"))


def test_recap_push_exit_codes(tmp_path, capsys):
    from components.cli import main

    storage.write_text(str(tmp_path / "model" / "weights.pt"), "w")
    args = ["push", "--model", str(tmp_path / "model"), "--serving", str(tmp_path / "serving")]
    refused = blessed_evaluation(str(tmp_path / "a"), False)
    assert main([*args, "--evaluation", refused, "--version", "v1"]) == 1
    assert "recap push: error:" in capsys.readouterr().err
    assert main([*args, "--evaluation", blessed_evaluation(str(tmp_path / "b"), True), "--version", "../x"]) == 2
    assert main([*args, "--evaluation", blessed_evaluation(str(tmp_path / "c"), True), "--version", "v3"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "serving" / "v3")
