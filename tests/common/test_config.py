from __future__ import annotations

import pytest
from pydantic import Field

from components.common.config import StrictModel, expand_env, load_config, set_override
from components.common.errors import ConfigError


class Optimizer(StrictModel):
    lr: float = Field(gt=0)
    betas: tuple[float, float] = (0.95, 0.999)


class Training(StrictModel):
    save_dir: str
    num_train_steps: int = 10


class Config(StrictModel):
    training: Training
    optimizer: Optimizer


def write(tmp_path, text: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_env_expansion_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUT", "gs://bucket/run")
    monkeypatch.delenv("MISSING", raising=False)
    monkeypatch.setenv("EMPTY", "")
    assert expand_env("${OUT}/x ${MISSING:-local} ${EMPTY:-fallback}") == "gs://bucket/run/x local fallback"
    with pytest.raises(ConfigError, match=r"src: environment variable \$\{MISSING\} is not set"):
        expand_env("${MISSING}", "src")


def test_load_valid_config_with_env(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAVE", "/tmp/save")
    path = write(tmp_path, "training:\n  save_dir: ${SAVE}\noptimizer:\n  lr: 0.001\n")
    config = load_config(path, Config)
    assert config.training.save_dir == "/tmp/save"
    assert config.training.num_train_steps == 10
    assert config.optimizer.betas == (0.95, 0.999)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("training:\n  save_dir: x\n  nmu_train_steps: 3\noptimizer: {lr: 1}\n", r"training\.nmu_train_steps: unknown field"),
        ("training:\n  save_dir: x\noptimizer: {lr: -1}\n", r"optimizer\.lr: Input should be greater than 0"),
        ("training: {}\noptimizer: {lr: 1}\n", r"training\.save_dir: Field required"),
        ("training: [1\n", r"line \d+ invalid YAML"),
        ("- a\n- b\n", r"expected a mapping at the top level"),
    ],
)
def test_errors_name_the_file_and_field(tmp_path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path, Config)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml", Config)


def test_set_override() -> None:
    data = {"training": {"save_dir": "a"}}
    set_override(data, "training.save_dir", "b")
    set_override(data, "optimizer.lr", 0.1)
    assert data == {"training": {"save_dir": "b"}, "optimizer": {"lr": 0.1}}
    with pytest.raises(ConfigError):
        set_override(data, "training.save_dir.x", 1)
