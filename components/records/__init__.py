"""The records contract between convert and train/evaluate: converted splits of gzip TFRecord
shards with a manifest, read back as torch `RecapBatch`es.

Nothing is imported here: `layout` is plain Python (convert's image has no torch), while the
reader needs torch, torchrec and TensorFlow.
"""
