"""Convert raw Parquet to gzip TFRecord shards (segdense layout), split into train/eval, manifests last."""

from components.convert.convert import ConvertResult, ConvertSettings, run

__all__ = ["ConvertResult", "ConvertSettings", "run"]
