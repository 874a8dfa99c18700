"""The layout of a converted dataset: what convert writes and the reader expects.

```
<out>/train/part-00000-of-00004.tfrecord.gz ... _MANIFEST.json  (kind "tfrecord")
<out>/eval/ part-00000-of-00004.tfrecord.gz ... _MANIFEST.json
```
Each record is one `tf.train.Example` with the schema's TFRecord feature names (the
original's segdense names) as fixed-length lists. Plain Python: the convert image has no torch.
"""

from __future__ import annotations

from typing import Any

from components.common import storage
from components.common.schema import Schema

MANIFEST_KIND = "tfrecord"
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
SPLITS = (TRAIN_SPLIT, EVAL_SPLIT)


def split_uri(dataset_uri: str, split: str) -> str:
    """`<dataset>/train` or `<dataset>/eval`: the directory that holds a split and its manifest."""
    return storage.join(dataset_uri, split)


def shard_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}.tfrecord.gz"


def parse_spec(schema: Schema) -> dict[str, tuple[str, int]]:
    """TFRecord feature name -> (dtype, length), framework-free."""
    return {f.feature: (f.dtype, f.length) for f in schema.features}


def tf_feature_spec(schema: Schema) -> dict[str, Any]:
    """The `tf.io.parse_example` spec (imports TensorFlow only when asked)."""
    import tensorflow as tf

    dtypes = {"float32": tf.float32, "int64": tf.int64}
    return {f.feature: tf.io.FixedLenFeature([f.length], dtypes[f.dtype]) for f in schema.features}
