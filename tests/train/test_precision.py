"""bf16 weight copies kept by the optimizer: the same training as plain bf16 autocast, and
checkpoints that either mode resumes."""

from __future__ import annotations

import pytest
import torch

from components.exported_model.model_dir import load_exported_model
from components.ranker.layers import linear
from components.train import precision
from components.train.config import load_train_config
from components.train.distributed import init_distributed, shutdown_distributed
from components.train.loop import build_training_model, train
from components.train.synthetic import synthetic_source
from tests.train.conftest import tiny_config_data, write_config

BF16 = {"bf16_autocast": True}


@pytest.fixture
def env():
    yield init_distributed()
    shutdown_distributed()


def run(tmp_path, env, save_dir, name, **training):
    config = load_train_config(write_config(tmp_path / name, tiny_config_data(save_dir, **training)))
    schema = config.load_schema()
    size = config.train_data.global_batch_size
    return train(config, schema, env, synthetic_source(schema, size), synthetic_source(schema, size, offset=10**6))


def exported_weights(result) -> dict[str, torch.Tensor]:
    return load_exported_model(result.model_dir).model.state_dict()


def test_weight_copies_train_exactly_like_plain_autocast(tmp_path, env):
    plain = run(tmp_path, env, str(tmp_path / "plain"), "a.yaml", steps=12, train_log_every_n=3,
                bf16_weight_copies=False, **BF16)
    copies = run(tmp_path, env, str(tmp_path / "copies"), "b.yaml", steps=12, train_log_every_n=3, **BF16)
    assert copies.history == plain.history  # bit for bit: same casts, same gradients, same kernel
    assert copies.eval_losses == plain.eval_losses
    a, b = exported_weights(plain), exported_weights(copies)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
        assert b[name].dtype != torch.bfloat16, name  # the export holds the fp32 masters


def test_weight_copies_move_the_weights_the_optimizer_owns(tmp_path, env):
    config = load_train_config(write_config(tmp_path / "c.yaml", tiny_config_data(str(tmp_path / "run"), **BF16)))
    schema = config.load_schema()
    model, dmp, optimizers = build_training_model(config, schema, env)
    layers = [m for m in model.modules() if getattr(m, "compute_dtype", None) is not None]
    assert layers and all(not layer.weight.requires_grad for layer in layers)
    owned = {id(p) for group in optimizers.dense.param_groups for p in group["params"]}
    assert all(id(layer.weight) in owned for layer in layers)
    # Adam's own state layout, present before the first step, so a checkpoint can load into it.
    state = optimizers.combined.state_dict()["state"]
    assert set(state["dense.towers.is_replied.0.weight"]) == {"step", "exp_avg", "exp_avg_sq"}


@pytest.mark.parametrize("first_copies, then_copies", [(False, True), (True, False), (True, True)])
def test_checkpoints_resume_across_modes(tmp_path, env, first_copies, then_copies):
    straight = run(tmp_path, env, str(tmp_path / "a"), "a.yaml", steps=8, train_log_every_n=2,
                   checkpoint_every_n=4, bf16_weight_copies=first_copies, **BF16)
    first = run(tmp_path, env, str(tmp_path / "b"), "b1.yaml", steps=4, train_log_every_n=2,
                checkpoint_every_n=4, bf16_weight_copies=first_copies, **BF16)
    resumed = run(tmp_path, env, str(tmp_path / "b"), "b2.yaml", steps=8, train_log_every_n=2,
                  checkpoint_every_n=4, bf16_weight_copies=then_copies, **BF16)
    assert resumed.resumed_from == 4
    # Adam's moments and the masters survive the checkpoint: the resumed run continues the same curve.
    assert dict(first.history + resumed.history) == dict(straight.history)


@pytest.mark.parametrize("setting", [{"gradient_accumulation": 2}, {"fused_adam": False}])
def test_plain_autocast_where_copies_would_change_the_numbers(tmp_path, env, setting):
    """Accumulation sums micro-batch gradients in fp32; an unfused Adam was asked for."""
    data = tiny_config_data(str(tmp_path / "run"), **BF16, **{k: v for k, v in setting.items() if k != "fused_adam"})
    if "fused_adam" in setting:
        data["optimizer"]["fused_adam"] = setting["fused_adam"]
    config = load_train_config(write_config(tmp_path / "c.yaml", data))
    model, _, optimizers = build_training_model(config, config.load_schema(), env)
    assert not precision.master_weights(model)
    assert type(optimizers.dense) is torch.optim.Adam


def test_a_layer_without_gradient_keeps_its_weights_and_state(tmp_path, env):
    torch.manual_seed(0)
    used, unused = linear(8, 4), linear(8, 4)
    precision.use_bf16_weight_copies(used)
    precision.use_bf16_weight_copies(unused)
    adam = precision.MasterWeightAdam([{"params": [*used.parameters(), *unused.parameters()], "lr": 0.1}],
                                      [used, unused])
    unused(torch.randn(2, 8))  # a forward without backward: the copy exists but has no gradient
    before = unused.weight.detach().clone()
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            used(torch.randn(2, 8)).float().sum().backward()
        adam.step()
    assert torch.equal(unused.weight, before) and float(adam.state[unused.weight]["step"]) == 0
    assert float(adam.state[used.weight]["step"]) == 2


def test_recreated_copy_gets_the_update(tmp_path, env):
    """The plan cache must not write into a dropped copy whose id a new copy reused."""
    torch.manual_seed(0)
    layer = linear(8, 4)
    precision.use_bf16_weight_copies(layer)
    adam = precision.MasterWeightAdam([{"params": list(layer.parameters()), "lr": 0.1}], [layer])
    for _ in range(6):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            layer(torch.randn(2, 8)).float().sum().backward()
        adam.step()
        assert torch.equal(layer.compute_weight, layer.weight.detach().bfloat16())
        layer.compute_weight = None  # e.g. a device move: the next forward makes a new copy


def test_copy_follows_weight_changes_made_outside_the_optimizer():
    layer = linear(6, 3)
    layer.compute_dtype = torch.bfloat16
    x = torch.randn(4, 6)
    first = layer(x)
    assert first.dtype == torch.bfloat16
    assert torch.equal(layer.compute_weight, layer.weight.detach().bfloat16())
    layer.load_state_dict({"weight": torch.full((3, 6), 0.5), "bias": torch.zeros(3)})  # e.g. a checkpoint load
    layer(x)
    assert torch.equal(layer.compute_weight, torch.full((3, 6), 0.5, dtype=torch.bfloat16))
    layer.weight.data = torch.full((3, 6), 0.25)  # a new tensor behind the parameter
    layer(x)
    assert torch.equal(layer.compute_weight, torch.full((3, 6), 0.25, dtype=torch.bfloat16))


def test_master_weight_adam_matches_torch_adam_on_bf16_gradients():
    torch.manual_seed(0)
    reference, fast = linear(700, 3000), linear(700, 3000)  # 2.1 M weights: more than one chunk
    fast.load_state_dict(reference.state_dict())
    fast.compute_dtype = torch.bfloat16
    precision.use_bf16_weight_copies(fast)
    adam_ref = torch.optim.Adam(reference.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-7, fused=True)
    adam_fast = precision.MasterWeightAdam(list(fast.parameters()), [fast], lr=0.01, betas=(0.9, 0.99), eps=1e-7)
    for step in range(3):
        x = torch.randn(16, 700)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reference(x).float().square().mean().backward()
            fast(x).float().square().mean().backward()
        adam_ref.step()
        adam_fast.step()
        adam_ref.zero_grad()
        adam_fast.zero_grad()
        assert torch.equal(fast.weight, reference.weight), step
        assert torch.equal(fast.bias, reference.bias), step
        assert torch.equal(fast.compute_weight, reference.weight.detach().bfloat16()), step
        assert fast.compute_weight.grad is None


@pytest.mark.integration
def test_two_ranks_reduce_copy_gradients_like_ddp(tmp_path):
    """2 ranks: the masters leave DDP and the step all-reduces their gradients in fp32, which
    gives the curve of DDP over autocast's fp32 gradients; and 2 ranks still match 1."""
    from tests.train.test_distributed import run_worker

    histories = {}
    for name, nproc, copies in (("plain2", 2, False), ("copies2", 2, True), ("copies1", 1, True)):
        data = tiny_config_data(str(tmp_path / name), steps=8, train_log_every_n=1, checkpoint_every_n=100,
                                num_eval_steps=0, bf16_weight_copies=copies, **BF16)  # on CPU auto is on
        histories[name] = dict(run_worker(tmp_path, name, nproc, data)["history"])
    assert histories["copies2"] == histories["plain2"]  # a world size of 2: dividing first or last is exact
    # bf16 matmuls over half batches round differently than over whole ones: ~2e-3 after 8 steps.
    assert histories["copies2"] == pytest.approx(histories["copies1"], rel=1e-2)


def _rank_with_a_silent_layer(rank: int, store_path: str, errors) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(store_path, 2), rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        layers = [linear(4, 4), linear(4, 4)]
        for layer in layers:
            precision.use_bf16_weight_copies(layer)
        adam = precision.MasterWeightAdam([{"params": [p for m in layers for p in m.parameters()], "lr": 0.1}],
                                          layers)
        used = layers if rank == 0 else layers[:1]  # rank 1's second layer gets no gradient
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sum(layer(torch.randn(2, 4)).float().sum() for layer in used).backward()
        try:
            adam.step()
        except RuntimeError as exc:
            errors.put((rank, str(exc)))
    finally:
        dist.destroy_process_group()


@pytest.mark.integration
def test_ranks_updating_different_weights_fail_with_a_message(tmp_path):
    import torch.multiprocessing as mp

    errors = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_rank_with_a_silent_layer, args=(str(tmp_path / "store"), errors), nprocs=2,
                       start_method="spawn")
    messages = dict(errors.get() for _ in range(2))
    assert set(messages) == {0, 1}
    assert all("ranks have gradients for different weights" in m for m in messages.values())
