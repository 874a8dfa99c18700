"""The converted dataset's layout: the original's segdense feature names, parseable by TensorFlow."""

from __future__ import annotations

from components.common.schema import load_schema
from components.records.layout import SPLITS, parse_spec, shard_name, split_uri, tf_feature_spec

LABELS = 13


def test_parse_spec_uses_the_original_segdense_names() -> None:
    spec = parse_spec(load_schema("prod"))
    assert spec["home_recap_2022_cont__segdense_vals"] == ("float32", 6000)
    assert spec["home_recap_2022_binary__segdense_vals"] == ("int64", 512)
    assert spec["home_recap_2022_discrete__segdense_vals"] == ("int64", 320)
    assert spec["user.timelines.twhin_user_follow_embeddings.twhin_user_follow_embeddings"] == ("float32", 200)
    assert spec["meta.user_id"] == ("int64", 1)
    assert spec["recap.engagement.is_favorited"] == ("int64", 1)
    assert len(spec) == 3 + 3 + 3 + LABELS


def test_tf_feature_spec_parses() -> None:
    import tensorflow as tf

    schema = load_schema("local")
    example = tf.train.Example()
    for f in schema:
        feature = example.features.feature[f.feature]
        if f.dtype == "float32":
            feature.float_list.value.extend([0.5] * f.length)
        else:
            feature.int64_list.value.extend([1] * f.length)
    parsed = tf.io.parse_example([example.SerializeToString()], tf_feature_spec(schema))
    assert parsed["home_recap_2022_cont__segdense_vals"].shape == (1, 64)


def test_splits_and_shard_names_sort_in_shard_order() -> None:
    assert [split_uri("gs://b/data", s) for s in SPLITS] == ["gs://b/data/train", "gs://b/data/eval"]
    names = [shard_name(i, 12) for i in range(12)]
    assert names == sorted(names) and names[0] == "part-00000-of-00012.tfrecord.gz"
