"""`make gpu-check`: what the trainer does on one CUDA GPU, in a few minutes; nothing on a CPU.

The project has no GPU, so its CUDA paths are correct by reading, not by running. This script is
what a machine with one NVIDIA GPU runs to find out (under 10 minutes with the defaults):

1. speed: configs/prod.yaml's model (world of one, DMP, fused optimizers) on synthetic batches
   held in host memory and copied each step as training does, at per-GPU batches 1024 and 4096,
   in fp32, TF32 and bf16 autocast: examples/s over timed steps after warm-up, and
   torch.cuda.max_memory_allocated;
2. real batches: the same with batches from the tf.data reader over prod-shaped TFRecords that it
   generates and converts first (bf16), i.e. the input pipeline in the loop;
3. a torch.profiler trace of a few bf16 steps: kernel launches and host syncs (stream, device and
   event synchronizations, synchronous copies) per step;
4. a round trip: configs/local.yaml trained 10 steps with a DCP checkpoint, resumed to 20 and
   exported, on the GPU and, in a child process, on the CPU (both fp32, TF32 off); the losses and
   the exported models' probabilities must agree within a tolerance (not bit for bit: cuBLAS and
   fbgemm's CUDA kernels sum in other orders).

It prints one `gpu_check ...` line per measurement and a JSON summary (also written to --out).
Without CUDA it says so and exits 0 without measuring or claiming anything; `--allow-cpu` runs
the same code on the CPU with small shapes, to check the script itself (its numbers say nothing
about a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = {"fp32": {"training.bf16_autocast": False, "training.tf32": False},
              "tf32": {"training.bf16_autocast": False, "training.tf32": True},
              "bf16": {"training.bf16_autocast": True, "training.tf32": True}}
LOSS_RTOL, PROBABILITY_ATOL = 2e-3, 2e-3
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")
LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
NO_GPU = ("gpu-check: no CUDA GPU is present (torch.cuda.is_available() is False): nothing was measured "
          "and no result is claimed. Run it on a machine with an NVIDIA GPU and the CUDA stack (docs/gpu.md).")


def say(**values: object) -> None:
    print("gpu_check " + " ".join(f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in values.items()),
          flush=True)


def _world_of_one():
    from components.train.distributed import init_distributed

    return init_distributed()


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _max_memory_gib(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_memory(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _trainer(env, overrides: dict, config_path: str = "configs/prod.yaml"):
    from components.train import numerics
    from components.train.config import load_train_config
    from components.train.loop import build_training_model

    config = load_train_config(str(ROOT / config_path), {"training.save_dir": tempfile.mkdtemp(prefix="gpu-check-"),
                                                          "training.tensorboard": False, **overrides})
    numerics.configure(config.training, env.device)
    schema = config.load_schema()
    model, dmp, optimizers = build_training_model(config, schema, env)
    optimizers.set_step(10_000)  # past the ramps: real learning rates
    import torch

    pos_weight = torch.ones(len(schema.tasks), device=env.device)
    from components.train.feed import host_batch

    def host(batch):  # IDs hashed to table rows, pinned on CUDA: as train() feeds every source
        return host_batch(batch, model.id_tables(), env.device)

    return config, schema, dmp, optimizers, pos_weight, host


def measure_speed(env, precision: str, batch_size: int, warmup: int, steps: int, batches=None) -> dict:
    """examples/s and peak device memory of `steps` timed training steps after `warmup`."""
    from components.train.loop import train_step
    from components.train.synthetic import global_batch

    _reset_memory(env.device)
    config, schema, dmp, optimizers, pos_weight, host = _trainer(
        env, {"train_data.per_rank_batch_size": batch_size, **PRECISIONS[precision]})
    source = map(host, batches if batches is not None else iter(
        [global_batch(schema, batch_size, i) for i in range(4)] * ((warmup + steps) // 4 + 1)))
    for _ in range(warmup):
        train_step(dmp, optimizers, [next(source)], config, env, pos_weight)
    _sync(env.device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(dmp, optimizers, [next(source)], config, env, pos_weight)
    _sync(env.device)
    elapsed = time.perf_counter() - start
    result = {"precision": precision, "batch": batch_size, "examples_per_s": batch_size * steps / elapsed,
              "step_ms": 1000 * elapsed / steps, "max_memory_gib": _max_memory_gib(env.device)}
    del dmp, optimizers
    return result


def profile_steps(env, batch_size: int, steps: int) -> dict:
    """Kernel launches and host syncs per bf16 step, from the CUDA runtime calls a profiler records."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from components.train.loop import train_step
    from components.train.synthetic import global_batch

    config, schema, dmp, optimizers, pos_weight, host = _trainer(
        env, {"train_data.per_rank_batch_size": batch_size, **PRECISIONS["bf16"]})
    batches = [host(global_batch(schema, batch_size, i)) for i in range(2)]
    for index in range(3):
        train_step(dmp, optimizers, [batches[index % 2]], config, env, pos_weight)
    _sync(env.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if env.device.type == "cuda" else [])
    with profile(activities=activities) as trace:
        for index in range(steps):
            train_step(dmp, optimizers, [batches[index % 2]], config, env, pos_weight)
        _sync(env.device)
    counts = {event.key: event.count for event in trace.key_averages()}
    launches = sum(counts.get(name, 0) for name in LAUNCH_CALLS)
    syncs = sum(counts.get(name, 0) for name in SYNC_CALLS)
    del dmp, optimizers
    torch.cuda.empty_cache() if env.device.type == "cuda" else None
    return {"batch": batch_size, "steps": steps, "kernel_launches_per_step": launches / steps,
            "host_syncs_per_step": syncs / steps, "cuda_events_recorded": env.device.type == "cuda"}


def real_batches(rows: int, batch_size: int):
    """Batches of the trainer's reader over prod-shaped TFRecords generated and converted here."""
    from components.common.schema import load_schema
    from components.convert.convert import ConvertSettings
    from components.convert.convert import run as convert
    from components.datagen import generate
    from components.records.reader import ReaderOptions, read_batches

    schema = load_schema("prod")
    root = Path(tempfile.mkdtemp(prefix="gpu-check-data-"))
    generate(schema, str(root / "raw"), rows=rows, files=2, seed=0)
    convert(str(root / "raw"), schema, str(root / "data"),
            ConvertSettings(shards=4, workers=max(1, min(8, os.cpu_count() or 1)), eval_fraction=0.0))
    options = ReaderOptions(batch_size=batch_size, shuffle=True, repeat=True, drop_remainder=True, num_parallel_reads=4)
    return read_batches(str(root / "data" / "train"), schema, options)


def round_trip(env, out: Path) -> dict:
    """Train 10 steps (checkpoint), resume to 20 and export: losses and exported probabilities."""
    import torch

    from components.exported_model.model_dir import load_exported_model
    from components.train.config import load_train_config
    from components.train.loop import train
    from components.train.synthetic import global_batch, synthetic_source

    save_dir = tempfile.mkdtemp(prefix="gpu-check-roundtrip-")
    overrides = {"training.save_dir": save_dir, "training.tensorboard": False, "training.checkpoint_every_n": 10,
                 "training.train_log_every_n": 2, "training.num_eval_steps": 0, **PRECISIONS["fp32"]}
    history = []
    for steps in (10, 20):
        config = load_train_config(str(ROOT / "configs/local.yaml"), {**overrides, "training.num_train_steps": steps})
        schema = config.load_schema()
        result = train(config, schema, env, synthetic_source(schema, config.train_data.global_batch(1), seed=5))
        history += [list(point) for point in result.history]
    model = load_exported_model(result.model_dir).model
    with torch.no_grad():
        probabilities = model(global_batch(schema, 256, 10**6, seed=5))["probabilities"]
    report = {"device": env.device.type, "resumed_from": result.resumed_from, "history": history,
              "probabilities": probabilities.tolist()}
    out.write_text(json.dumps(report))
    return report


def compare_round_trips(device_run: dict, cpu_run: dict) -> dict:
    import torch

    losses = torch.tensor([loss for _, loss in device_run["history"]])
    reference = torch.tensor([loss for _, loss in cpu_run["history"]])
    loss_rel = float(((losses - reference).abs() / reference.abs().clamp_min(1e-8)).max())
    probability_diff = float((torch.tensor(device_run["probabilities"]) - torch.tensor(cpu_run["probabilities"])).abs().max())
    same_steps = [s for s, _ in device_run["history"]] == [s for s, _ in cpu_run["history"]]
    ok = (same_steps and device_run["resumed_from"] == cpu_run["resumed_from"] == 10
          and loss_rel <= LOSS_RTOL and probability_diff <= PROBABILITY_ATOL)
    return {"resumed_from": device_run["resumed_from"], "max_loss_rel_diff": loss_rel,
            "max_probability_diff": probability_diff, "loss_rtol": LOSS_RTOL, "probability_atol": PROBABILITY_ATOL,
            "agrees_with_cpu": ok}


def cpu_reference(out: Path) -> dict:
    """The round trip in a child process on the CPU (RECAP_FORCE_CPU=1: gloo, CPU tensors)."""
    env = {**os.environ, "RECAP_FORCE_CPU": "1", "PYTHONPATH": str(ROOT)}
    env.pop("RANK", None)
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--cpu-reference", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the CPU reference run failed:\n{done.stderr[-2000:]}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1024,4096", help="per-GPU batches to time (comma-separated)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--real-rows", type=int, default=20_000, help="prod rows to generate for real batches (0: skip)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU to check the script (no GPU result)")
    parser.add_argument("--cpu-reference", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    from components.common.logs import setup_logging
    from components.train.__main__ import quiet_libraries

    setup_logging()
    quiet_libraries()
    if args.cpu_reference:
        round_trip(_world_of_one(), Path(args.cpu_reference))
        return 0
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print(NO_GPU, flush=True)
        return 0
    started = time.perf_counter()
    env = _world_of_one()
    gpu = torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else "none (--allow-cpu: not a GPU result)"
    say(device=env.device, gpu=repr(gpu), torch=torch.__version__)
    summary: dict = {"device": str(env.device), "gpu": gpu, "torch": torch.__version__, "speed": [], "real": None}
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        for precision in PRECISIONS:
            result = measure_speed(env, precision, batch_size, args.warmup, args.steps)
            summary["speed"].append(result)
            say(what="synthetic", **result)
    if args.real_rows:
        batch_size = int(args.batch_sizes.split(",")[0])
        batches = real_batches(args.real_rows, batch_size)
        summary["real"] = measure_speed(env, "bf16", batch_size, args.warmup, args.steps, batches=batches)
        say(what="real", **summary["real"])
    summary["profile"] = profile_steps(env, int(args.batch_sizes.split(",")[0]), args.profile_steps)
    say(what="profile", **summary["profile"])
    work = Path(tempfile.mkdtemp(prefix="gpu-check-compare-"))
    device_run = round_trip(env, work / "device.json")
    summary["round_trip"] = compare_round_trips(device_run, cpu_reference(work / "cpu.json"))
    say(what="round_trip", **summary["round_trip"])
    summary["seconds"] = time.perf_counter() - started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2), flush=True)
    return 0 if summary["round_trip"]["agrees_with_cpu"] else 1


if __name__ == "__main__":
    sys.exit(main())
