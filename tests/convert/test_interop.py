"""Our shards parse with the original trainer's parse spec (the segdense table in docs/model.md).

The spec below is written out from that table on purpose, not taken from our
schema, so a drift of our schema away from the original's names, dtypes or lengths fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from components.common.schema import load_schema
from components.convert import ConvertSettings, run
from tests.convert.rawdata import write_raw

tf = pytest.importorskip("tensorflow")

LABELS = [
    "is_bookmarked", "is_favorited", "is_good_clicked_convo_desc_favorited_or_replied",
    "is_good_clicked_convo_desc_v2", "is_negative_feedback_v2", "is_profile_clicked_and_profile_engaged",
    "is_replied", "is_replied_reply_engaged_by_author", "is_report_tweet_clicked", "is_retweeted",
    "is_shared", "is_tweet_detail_dwelled_15_sec", "is_video_playback_50",
]
ORIGINAL_SPEC = {
    "home_recap_2022_cont__segdense_vals": (tf.float32, 6000),
    "home_recap_2022_binary__segdense_vals": (tf.int64, 512),
    "home_recap_2022_discrete__segdense_vals": (tf.int64, 320),
    "user.timelines.twhin_user_follow_embeddings.twhin_user_follow_embeddings": (tf.float32, 200),
    "user.timelines.twhin_user_engagement_embeddings.twhin_user_engagement_embeddings": (tf.float32, 200),
    "original_author.timelines.twhin_author_follow_embeddings.twhin_author_follow_embeddings": (tf.float32, 200),
    "meta.user_id": (tf.int64, 1), "meta.author_id": (tf.int64, 1), "meta.tweet_id": (tf.int64, 1),
    **{f"recap.engagement.{name}": (tf.int64, 1) for name in LABELS},
}


def test_prod_shards_parse_with_the_original_spec(tmp_path):
    schema = load_schema("prod")
    table = write_raw(schema, str(tmp_path / "raw"), rows=24, files=1, row_group_size=8)
    result = run(str(tmp_path / "raw"), schema, str(tmp_path / "out"),
                 ConvertSettings(eval_fraction=0.0, shards=2, workers=1))
    spec = {name: tf.io.FixedLenFeature([length], dtype) for name, (dtype, length) in ORIGINAL_SPEC.items()}
    dataset = tf.data.TFRecordDataset(list(result.shard_uris["train"]), compression_type="GZIP")
    parsed = next(iter(dataset.batch(100).map(lambda records: tf.io.parse_example(records, spec))))
    # Shards hold contiguous row ranges in input order, so with everything in train the
    # parsed rows are the input rows in order.
    assert parsed["meta.tweet_id"].shape == (24, 1)
    for spec_entry in schema.features:
        column = table.column(spec_entry.column).combine_chunks()
        if spec_entry.is_scalar:
            expected = column.to_numpy(zero_copy_only=False).reshape(24, 1)
        else:
            expected = column.flatten().to_numpy().reshape(24, spec_entry.length)
        got = parsed[spec_entry.feature].numpy()
        if spec_entry.dtype == "float32":
            np.testing.assert_array_equal(got.view(np.uint32), expected.astype(np.float32).view(np.uint32))
        else:
            np.testing.assert_array_equal(got, expected.astype(np.int64))
