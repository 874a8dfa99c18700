"""`recap train` builds the torchrun command; bad configs fail before any process starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from components.cli import main as recap
from components.common.errors import ConfigError
from components.train.config import load_train_config
from components.trainer_command.flags import OVERRIDES, config_overrides
from components.trainer_command.torchrun import torchrun_command
from tests.train.conftest import REPO_ROOT, tiny_config_data, write_config


def test_single_node_runs_standalone():
    command = torchrun_command("configs/local.yaml", nproc_per_node=2, max_restarts=1,
                               overrides={"train_data": "gs://b/train", "save_dir": None})
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert "--standalone" in command and "--nproc_per_node=2" in command and "--max-restarts=1" in command
    tail = command[command.index("-m", 3):]
    assert tail == ["-m", "components.train", "--config_path=configs/local.yaml", "--train_data=gs://b/train"]


def test_multi_node_uses_rendezvous_and_a_custom_launcher():
    command = torchrun_command("c.yaml", nproc_per_node=8, nnodes=4, rdzv_endpoint="master:29400",
                               node_rank=3, debug_loop=True, launcher=("torchrun",))
    assert command[0] == "torchrun" and "--standalone" not in command
    assert {"--nnodes=4", "--rdzv_backend=c10d", "--rdzv_endpoint=master:29400", "--node_rank=3"} <= set(command)
    assert command[-1] == "--debug_loop"
    with pytest.raises(ConfigError, match="rdzv_endpoint"):
        torchrun_command("c.yaml", nnodes=2)


def test_bad_config_exits_2_before_starting_torchrun(tmp_path, capsys):
    data = tiny_config_data(str(tmp_path))
    data["model"]["tower"]["layer_sizes"] = "wide"
    config = write_config(tmp_path / "bad.yaml", data)
    assert recap(["train", f"--config_path={config}", "--nproc_per_node=2"]) == 2
    assert "model.tower.layer_sizes" in capsys.readouterr().err


@pytest.mark.integration
def test_trainer_module_reports_config_errors_with_exit_2(tmp_path):
    config = write_config(tmp_path / "c.yaml", tiny_config_data(str(tmp_path)) | {"optimiser": {}})
    done = subprocess.run([sys.executable, "-m", "components.train", f"--config_path={config}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "optimiser: unknown field" in done.stderr


def test_every_trainer_flag_overrides_a_real_config_field(tmp_path):
    config = write_config(tmp_path / "c.yaml", tiny_config_data(str(tmp_path / "run")))
    values = {flag.name: (7 if flag.type is int else 2.5 if flag.type is float else f"gs://b/{flag.name}")
              for flag in OVERRIDES}
    loaded = load_train_config(config, config_overrides(values)).model_dump()
    for flag in OVERRIDES:
        section, field = flag.config_field.split(".")
        assert loaded[section][field] == values[flag.name], flag.name
    with pytest.raises(ConfigError, match="not a trainer flag: num_steps"):
        torchrun_command("c.yaml", overrides={"num_steps": 3})
