"""MaskNet: every block's mask reads the network input; stacked blocks chain only their `net`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from components.ranker.config import MaskNetConfig
from components.ranker.layers import MaskNet

REPO = Path(__file__).resolve().parents[2]
IN_FEATURES = 20
STACKED = MaskNetConfig(use_parallel=False, mask_blocks=[
    {"aggregation_size": 16, "output_size": 12, "input_layer_norm": True},
    {"aggregation_size": 8, "output_size": 6, "input_layer_norm": True},
])


def test_stacked_blocks_mask_from_the_input_and_multiply_the_previous_output() -> None:
    torch.manual_seed(0)
    net = MaskNet(IN_FEATURES, STACKED)
    first, second = net.blocks
    shapes = {name: tuple(p.shape) for name, p in second.named_parameters()}
    assert shapes["mask.0.weight"] == (8, IN_FEATURES)  # reads the network input
    assert shapes["mask.2.weight"] == (12, 8)  # gates the previous block's 12 outputs
    assert shapes["hidden.weight"] == (6, 12) and shapes["input_layer_norm.weight"] == (12,)
    assert tuple(dict(first.named_parameters())["input_layer_norm.weight"].shape) == (IN_FEATURES,)

    seen: dict[str, torch.Tensor] = {}
    second.mask.register_forward_hook(lambda m, args, out: seen.update(mask_input=args[0], mask=out))
    second.register_forward_pre_hook(lambda m, args: seen.update(net=args[0]))
    first.register_forward_hook(lambda m, args, out: seen.update(first_out=out))
    x = torch.randn(5, IN_FEATURES, requires_grad=True)
    out = net(x)
    assert out.shape == (5, 6) and net.out_features == 6
    assert seen["mask_input"] is x and seen["net"] is seen["first_out"]

    # The second mask depends on the input directly, not through the first block.
    grads = torch.autograd.grad(seen["mask"].sum(), [x, *first.parameters()], allow_unused=True)
    assert grads[0] is not None and grads[0].abs().sum() > 0
    assert all(g is None for g in grads[1:])
    # and the output still depends on the first block, through `net`
    assert all(g is not None for g in torch.autograd.grad(out.sum(), list(first.parameters())))


def test_stacked_block_matches_the_formula() -> None:
    torch.manual_seed(1)
    net = MaskNet(IN_FEATURES, STACKED)
    x = torch.randn(4, IN_FEATURES)
    expected = x
    for block in net.blocks:
        gated = block.input_layer_norm(expected) * block.mask(x)
        expected = block.layer_norm(block.hidden(gated))
    torch.testing.assert_close(net(x), expected, rtol=0, atol=0)


def test_parallel_blocks_see_the_input_for_net_and_mask() -> None:
    torch.manual_seed(2)
    config = MaskNetConfig(mask_blocks=[{"aggregation_size": 16, "output_size": 8, "input_layer_norm": True},
                                        {"aggregation_size": 4, "output_size": 3}])
    net = MaskNet(IN_FEATURES, config)
    x = torch.randn(4, IN_FEATURES)
    expected = torch.cat([b.layer_norm(b.hidden(b.input_layer_norm(x) * b.mask(x))) for b in net.blocks], dim=1)
    torch.testing.assert_close(net(x), expected, rtol=0, atol=0)
    assert net.out_features == 11


def test_prod_parallel_mask_net_checkpoint_keys_are_unchanged() -> None:
    """configs/prod.yaml's backbone: the state dict names and shapes checkpoints were written with."""
    prod = yaml.safe_load((REPO / "configs" / "prod.yaml").read_text())["model"]["backbone"]["mask_net"]
    config = MaskNetConfig.model_validate(prod)
    assert config.use_parallel
    width = 64  # key names do not depend on it; shapes follow it
    state = MaskNet(width, config, sync_batch_norm=False).state_dict()
    expected: dict[str, tuple[int, ...]] = {}
    for i, block in enumerate(config.mask_blocks):
        agg, size = block.aggregation_size, block.output_size
        expected |= {f"blocks.{i}.mask.0.weight": (agg, width), f"blocks.{i}.mask.0.bias": (agg,),
                     f"blocks.{i}.mask.2.weight": (width, agg), f"blocks.{i}.mask.2.bias": (width,),
                     f"blocks.{i}.hidden.weight": (size, width), f"blocks.{i}.hidden.bias": (size,),
                     f"blocks.{i}.layer_norm.weight": (size,), f"blocks.{i}.layer_norm.bias": (size,)}
    total = sum(b.output_size for b in config.mask_blocks)
    expected |= {"mlp.0.weight": (2048, total), "mlp.0.bias": (2048,)}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected


@pytest.mark.parametrize("use_parallel", [True, False])
def test_every_mask_net_parameter_gets_a_gradient(use_parallel: bool) -> None:
    config = STACKED.model_copy(update={"use_parallel": use_parallel})
    net = MaskNet(IN_FEATURES, config, sync_batch_norm=False)
    net(torch.randn(3, IN_FEATURES)).sum().backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []
