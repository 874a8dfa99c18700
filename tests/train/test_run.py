"""The train step over URIs: `components.train.run(train_uri, validation_uri, out_uri, config)`."""

from __future__ import annotations

import yaml

from components.common import storage
from components.common.schema import load_schema
from components.convert import ConvertSettings
from components.convert import run as convert
from components.exported_model.model_dir import CONFIG, load_exported_model
from components.train import run
from components.train.config import load_train_config
from tests.convert.rawdata import write_raw
from tests.train.conftest import tiny_config_data, write_config


def test_run_trains_from_the_uris_it_is_given_and_exports_under_out(tmp_path):
    schema = load_schema("local")
    write_raw(schema, str(tmp_path / "raw"), rows=400, files=1)
    convert(str(tmp_path / "raw"), schema, str(tmp_path / "data"), ConvertSettings(shards=2, workers=1, eval_fraction=0.3))
    data = tiny_config_data("unused/save_dir", steps=4)
    data["train_data"] |= {"inputs": "unused/train", "global_batch_size": 16}
    config = load_train_config(write_config(tmp_path / "c.yaml", data))
    out = str(tmp_path / "out")
    result = run(str(tmp_path / "data" / "train"), str(tmp_path / "data" / "eval"), out, config)
    assert result.step == 4 and result.model_dir == storage.join(out, "model") and result.eval_losses
    exported = load_exported_model(result.model_dir)
    assert exported.step == 4 and exported.schema.hash == schema.hash
    written = yaml.safe_load(storage.read_text(storage.join(result.model_dir, CONFIG)))
    assert written["train_data"]["inputs"] == str(tmp_path / "data" / "train")
    assert written["validation_data"] == written["train_data"] | {"inputs": str(tmp_path / "data" / "eval"), "shuffle": False}
