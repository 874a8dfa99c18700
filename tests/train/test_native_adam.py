"""The native master-weight Adam kernel: bit-identical to torch's fused Adam, whatever the thread
split, and optional: every way of not having it falls back with a reason."""

from __future__ import annotations

import logging
import platform
import shutil

import pytest
import torch

from components.train import native

SIZES = (128 * 256, 1024 * 96, 64, 32 * 7)  # multiples of 16 x threads: torch's vector path throughout


@pytest.fixture
def fresh_kernel(monkeypatch, tmp_path):
    """Build into a private directory and forget any kernel loaded before."""
    monkeypatch.setenv("RECAP_NATIVE_DIR", str(tmp_path / "native"))
    native.master_adam_kernel.cache_clear()
    yield
    native.master_adam_kernel.cache_clear()


def kernel_here() -> native.MasterAdamKernel:
    if platform.machine().lower() not in ("x86_64", "amd64") or not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("the native kernel needs x86-64 and a C compiler")
    kernel = native.master_adam_kernel()
    assert kernel is not None, "x86-64 with a compiler: the kernel must build and load"
    return kernel


def random_state(seed: int, sizes=SIZES):
    generator = torch.Generator().manual_seed(seed)
    masters = [torch.randn(n, generator=generator) for n in sizes]
    return {"masters": masters,
            "grads": [torch.randn(n, generator=generator).bfloat16() for n in sizes],
            "exp_avgs": [torch.randn(n, generator=generator) * 1e-3 for n in sizes],
            "exp_avg_sqs": [torch.rand(n, generator=generator) * 1e-5 for n in sizes],
            "copies": [m.bfloat16() for m in masters]}


def clone(state: dict) -> dict:
    return {k: [t.clone() for t in v] for k, v in state.items()}


GROUPS = [
    {"lr": 1e-3, "betas": (0.95, 0.999), "eps": 1e-7, "weight_decay": 0.0, "maximize": False},
    {"lr": 3e-3, "betas": (0.3, 0.99), "eps": 1e-8, "weight_decay": 0.0, "maximize": False},  # lerp's other branch
    {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.01, "maximize": False},
    {"lr": 1e-4, "betas": (0.9, 0.98), "eps": 1e-8, "weight_decay": 0.0, "maximize": True},
]


@pytest.mark.parametrize("group", GROUPS, ids=["prod", "beta1-below-half", "weight-decay", "maximize"])
def test_kernel_is_bit_identical_to_torch_fused_adam(fresh_kernel, group):
    kernel = kernel_here()
    ours, theirs = random_state(0), None
    theirs = clone(ours)
    steps = [torch.tensor(0.0) for _ in SIZES]
    for step in range(1, 6):
        for tensor in steps:
            tensor += 1
        widened = [g.float() for g in theirs["grads"]]
        torch._fused_adam_(theirs["masters"], widened, theirs["exp_avgs"], theirs["exp_avg_sqs"], [], steps,
                           lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1],
                           weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False,
                           maximize=group["maximize"])
        kernel.update(**{k: ours[k] for k in ("masters", "grads", "exp_avgs", "exp_avg_sqs", "copies")},
                      hypers=[native.AdamHyper.for_step(group, float(step))] * len(SIZES), threads=2)
        for name in ("masters", "exp_avgs", "exp_avg_sqs"):
            for a, b in zip(ours[name], theirs[name], strict=True):
                assert torch.equal(a, b), (name, step)
        for copy, master in zip(ours["copies"], ours["masters"], strict=True):
            assert torch.equal(copy, master.bfloat16()), step  # the copy is the rounded master
        # the next step's gradients
        ours["grads"] = [g.flip(0).contiguous() for g in ours["grads"]]
        theirs["grads"] = [g.clone() for g in ours["grads"]]


def test_the_thread_split_does_not_change_a_bit(fresh_kernel):
    kernel = kernel_here()
    sizes = (1, 17, 1001, 4099, 33)  # shares start and end inside tensors, off vector boundaries
    results = []
    for threads in (1, 2, 3, 8):
        state = random_state(1, sizes)
        kernel.update(**state, hypers=[native.AdamHyper.for_step(GROUPS[0], 3.0)] * len(sizes), threads=threads)
        results.append(state)
    for other in results[1:]:
        for name in results[0]:
            for a, b in zip(results[0][name], other[name], strict=True):
                assert torch.equal(a, b), name


def test_kernel_refuses_tensors_it_would_misread(fresh_kernel):
    kernel = kernel_here()
    state = random_state(2, (64,))
    state["grads"] = [g.float() for g in state["grads"]]
    with pytest.raises(ValueError, match="gradient must be a contiguous CPU torch.bfloat16 tensor of 64"):
        kernel.update(**state, hypers=[native.AdamHyper.for_step(GROUPS[0], 1.0)], threads=1)
    state = random_state(2, (64,))
    state["copies"] = [torch.zeros(128, dtype=torch.bfloat16)[::2]]
    with pytest.raises(ValueError, match="copy must be a contiguous"):
        kernel.update(**state, hypers=[native.AdamHyper.for_step(GROUPS[0], 1.0)], threads=1)


def test_switched_off_by_environment(fresh_kernel, monkeypatch):
    monkeypatch.setenv("RECAP_NATIVE_ADAM", "0")
    assert native.master_adam_kernel() is None


def test_failing_compiler_falls_back_with_its_message(fresh_kernel, monkeypatch, caplog):
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86-64 only")
    monkeypatch.setenv("CC", "cc -DRECAP_BROKEN_BUILD -Wl,--no-such-linker-option")
    if not shutil.which("cc"):
        pytest.skip("needs cc")
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert native.master_adam_kernel() is None
    assert "native master Adam unavailable" in caplog.text and "exited with" in caplog.text
    assert not list((native._cache_dir()).glob("*.so"))  # nothing half-written left to load later


def test_no_compiler_falls_back(fresh_kernel, monkeypatch, caplog):
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setenv("PATH", "/nonexistent")
    with caplog.at_level(logging.INFO, logger=native.__name__):
        assert native.master_adam_kernel() is None
    assert "native master Adam" in caplog.text


def test_a_prebuilt_library_loads_without_a_compiler(fresh_kernel, monkeypatch):
    kernel_here()  # builds into RECAP_NATIVE_DIR, as the train image does at build time
    native.master_adam_kernel.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CC", raising=False)
    kernel = native.master_adam_kernel()
    assert kernel is not None and kernel.path.parent == native._cache_dir()


def test_single_process_cpu_training_uses_the_kernel(fresh_kernel, monkeypatch):
    from components.train.layers import linear
    from components.train.precision import MasterWeightAdam, use_bf16_weight_copies

    kernel = kernel_here()
    calls = []
    update = kernel.update
    monkeypatch.setattr(kernel, "update", lambda **kwargs: calls.append(len(kwargs["masters"])) or update(**kwargs))
    layer = linear(16, 8)
    use_bf16_weight_copies(layer)
    adam = MasterWeightAdam(list(layer.parameters()), [layer], lr=0.01)
    before = layer.weight.detach().clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(torch.randn(4, 16)).float().square().sum().backward()
    adam.step()
    assert calls == [1] and not torch.equal(layer.weight, before)
    assert torch.equal(layer.compute_weight, layer.weight.detach().bfloat16())
