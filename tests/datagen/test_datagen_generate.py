"""`recap data generate`: the raw contract, determinism, realistic marginals and a learnable signal."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from components.cli import main as recap
from components.common import storage
from components.common.errors import DataError
from components.common.manifest import read_manifest, verify_manifest
from components.common.raw_inputs import list_raw_inputs
from components.common.schema import load_schema
from components.datagen import generate, read_oracle
from components.datagen.oracle import OracleAccumulator
from components.datagen.rows import signed_log1p
from components.metrics.binary import BinaryMetricAccumulator

SCHEMA = load_schema("local")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[str, object]:
    out = str(tmp_path_factory.mktemp("gen") / "raw")
    return out, generate(SCHEMA, out, rows=30_000, files=3, seed=7, row_group_rows=4_000)


def _read(out: str) -> dict[str, np.ndarray]:
    table = pq.read_table(list(list_raw_inputs(out).files))
    arrays = {}
    for spec in SCHEMA.features:
        column = table.column(spec.column).combine_chunks()
        arrays[spec.column] = (column.to_numpy() if spec.is_scalar
                               else column.flatten().to_numpy().reshape(-1, spec.length))
    return arrays


def test_files_follow_the_raw_contract_and_the_manifest_lists_them(dataset) -> None:
    out, result = dataset
    assert [storage.basename(u) for u in result.files] == [f"part-0000{i}-of-00003.parquet" for i in range(3)]
    manifest, directory = read_manifest(out)
    assert manifest.kind == "raw-parquet" and manifest.schema_hash == SCHEMA.hash
    verify_manifest(manifest, directory, check_sha256=True)
    assert manifest.total_records == 30_000 == result.rows
    for uri in result.files:
        parquet = pq.ParquetFile(uri)
        assert parquet.schema_arrow == SCHEMA.raw_arrow_schema()
        assert parquet.metadata.num_rows == 10_000
        assert parquet.metadata.num_row_groups == 3  # 4000 + 4000 + 2000: streamed by row group


def test_oracle_has_every_task_with_a_clear_signal(dataset) -> None:
    out, result = dataset
    oracle = read_oracle(out)
    assert oracle == result.oracle
    assert oracle["schema"] == "local" and oracle["seed"] == 7 and oracle["rows"] == 30_000
    assert list(oracle["tasks"]) == SCHEMA.task_names
    assert set(oracle["other_labels"]) == {"is_bookmarked", "is_shared", "is_tweet_detail_dwelled_15_sec"}
    for name, task in oracle["tasks"].items():
        assert set(task) >= {"auroc", "log_loss", "positive_rate", "positives", "count"}
        assert task["count"] == 30_000
        if task["positives"] >= 30:
            assert 0.68 < task["auroc"] < 0.99, (name, task)
            assert task["rce"] > 3, (name, task)


def test_labels_have_realistic_rates_and_correlations(dataset) -> None:
    out, _ = dataset
    data = _read(out)
    rates = {spec.column: data[spec.column].mean() for spec in SCHEMA.labels}
    assert 0.05 < rates["is_favorited"] < 0.10
    assert 0.005 < rates["is_replied"] < 0.02
    assert rates["is_report_tweet_clicked"] < 0.003
    assert all(set(np.unique(data[spec.column])) <= {0, 1} for spec in SCHEMA.labels)
    # nested label: the author can only engage with a reply that exists
    engaged = data["is_replied_reply_engaged_by_author"] == 1
    assert engaged.any() and np.all(data["is_replied"][engaged] == 1)
    # tasks share a common propensity: a fav makes a retweet more likely
    fav = data["is_favorited"] == 1
    assert data["is_retweeted"][fav].mean() > 1.5 * data["is_retweeted"][~fav].mean()


def test_features_are_messy_like_real_data(dataset) -> None:
    out, _ = dataset
    data = _read(out)
    continuous = data["continuous"]
    assert 0.2 < np.mean(continuous == 0) < 0.7  # many zeros
    non_finite = ~np.isfinite(continuous)
    assert 0 < non_finite.mean() < 0.002 and non_finite.mean(axis=0).max() < 0.01  # a few NaN/inf
    finite = continuous[np.isfinite(continuous)]
    assert np.abs(finite).max() > 1000 * np.median(np.abs(finite[finite != 0]))  # heavy tails
    assert set(np.unique(data["binary"])) == {0, 1}
    users = data["user_id"]
    assert users.min() >= 0
    _, counts = np.unique(users, return_counts=True)
    top_share = np.sort(counts)[::-1][: max(1, len(counts) // 100)].sum() / len(users)
    assert top_share > 0.2  # Zipf: the top 1% of users produce a large share of rows


def test_same_seed_same_bytes_and_other_seed_other_rows(tmp_path) -> None:
    a = generate(SCHEMA, str(tmp_path / "a"), rows=3_000, files=2, seed=3)
    b = generate(SCHEMA, str(tmp_path / "b"), rows=3_000, files=2, seed=3)
    c = generate(SCHEMA, str(tmp_path / "c"), rows=3_000, files=2, seed=4)
    digest = [[f.sha256 for f in read_manifest(r.out_uri)[0].files] for r in (a, b, c)]
    assert digest[0] == digest[1]
    assert not set(digest[0]) & set(digest[2])
    assert a.oracle == b.oracle


def test_signal_is_learnable_from_model_inputs_across_seeds(tmp_path) -> None:
    """A plain logistic regression on what the model sees, trained on one seed, works on another."""
    train = _read(generate(SCHEMA, str(tmp_path / "train"), rows=30_000, files=1, seed=11).out_uri)
    held = generate(SCHEMA, str(tmp_path / "held"), rows=20_000, files=1, seed=12)
    test = _read(held.out_uri)

    def features(d: dict[str, np.ndarray]) -> np.ndarray:
        parts = [signed_log1p(d["continuous"]), d["binary"]] + [d[s.column] for s in SCHEMA.embeddings]
        return np.concatenate(parts, axis=1).astype(np.float64)

    x_train, x_test = features(train), features(test)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    for task in ("is_favorited", "is_video_playback_50"):
        model = LogisticRegression(max_iter=300).fit((x_train - mean) / std, train[task])
        auroc = roc_auc_score(test[task], model.predict_proba((x_test - mean) / std)[:, 1])
        oracle = held.oracle["tasks"][task]["auroc"]
        # no ID effects in a linear model on dense inputs, yet most of the lift is there
        assert auroc - 0.5 > 0.6 * (oracle - 0.5), (task, auroc, oracle)


def test_streaming_oracle_matches_exact_metrics() -> None:
    rng = np.random.default_rng(0)
    p = 1 / (1 + np.exp(-rng.normal(-3, 1.5, (50_000, 2))))
    y = (rng.random(p.shape) < p).astype(np.int8)
    acc = OracleAccumulator(["a", "b"])
    for start in range(0, len(p), 7_000):
        acc.add(y[start:start + 7_000], p[start:start + 7_000])
    for index in range(2):
        task = acc.task(index)
        assert task["auroc"] == pytest.approx(roc_auc_score(y[:, index], p[:, index]), abs=2e-4)
        exact = -np.mean(y[:, index] * np.log(p[:, index]) + (1 - y[:, index]) * np.log(1 - p[:, index]))
        assert task["log_loss"] == pytest.approx(exact, rel=1e-9)
        assert task["positives"] == int(y[:, index].sum())
        # the same core as evaluation: a model that predicted the truth would score exactly this
        scored = BinaryMetricAccumulator("truth")
        scored.update(p[:, index], y[:, index])
        truth = scored.compute()
        assert task["auroc"] == truth.auroc and task["rce"] == pytest.approx(truth.rce, rel=1e-12)


def test_shift_moves_distributions(tmp_path) -> None:
    base = _read(generate(SCHEMA, str(tmp_path / "base"), rows=5_000, files=1, seed=1).out_uri)
    moved = _read(generate(SCHEMA, str(tmp_path / "moved"), rows=5_000, files=1, seed=1, shift=1.0).out_uri)
    assert np.abs(base["binary"].mean(axis=0) - moved["binary"].mean(axis=0)).max() > 0.1
    assert np.abs(np.mean(base["continuous"] == 0, axis=0) - np.mean(moved["continuous"] == 0, axis=0)).max() > 0.1


def test_cli_writes_data_and_prints_the_oracle(tmp_path, capsys) -> None:
    out = str(tmp_path / "cli")
    assert recap(["data", "generate", "--schema", "local", "--rows", "2000", "--files", "2",
                  "--out", out, "--seed", "5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["rows"] == 2000 and printed["files"] == 2
    assert set(printed["oracle"]) == set(SCHEMA.task_names)
    assert read_manifest(out)[0].total_records == 2000


def test_read_oracle_names_the_file_when_missing(tmp_path) -> None:
    with pytest.raises(DataError, match="oracle.json"):
        read_oracle(str(tmp_path))


def test_bad_arguments_are_usage_errors(tmp_path) -> None:
    assert recap(["data", "generate", "--rows", "10", "--files", "0", "--out", str(tmp_path / "x")]) == 2
