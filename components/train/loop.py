"""The training loop: shard, resume, train with periodic logs / evaluation / checkpoints, export.

Runs identically on 1..N ranks; every rank calls `train` (torchrun starts them).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from components.common.errors import DataError
from components.common.logs import format_metrics
from components.common.schema import Schema
from components.metrics.task_auroc import TaskAUROC
from components.ranker.layers import Linear
from components.ranker.model import HeavyRanker
from components.records.batch import RecapBatch
from components.records.layout import ModelReads
from components.records.malloc import reuse_large_allocations
from components.train import checkpoint, numerics
from components.train.config import DataConfig, RecapConfig
from components.train.distributed import DistEnv
from components.train.feed import fed_source
from components.train.loss import multi_task_loss
from components.train.optim import build_dense_optimizer, group_schedules, set_learning_rates
from components.train.pipelined import PipelinedSteps, uses_train_pipeline
from components.train.precision import use_bf16_weight_copies
from components.train.ranks import (
    CheckedBatches,
    export_on_chief,
    export_wait_group,
    next_batches,
    on_chief,
    open_source,
)
from components.train.sharding import dense_named_parameters, gradient_sync_skipped, shard_model
from components.train.synthetic import BatchSource
from components.train.tensorboard import TensorBoard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    step: int  # optimizer steps done (== num_train_steps on success)
    resumed_from: int | None  # step of the checkpoint this run resumed from
    checkpoint_dir: str
    model_dir: str | None  # set on rank 0 when the model was exported
    losses: dict[str, float]  # last logged per-task training loss
    examples_per_s: float
    eval_losses: dict[str, float]
    history: tuple[tuple[int, float], ...] = ()  # (step, global mean training loss) at each log step


def reader_source(data: DataConfig, schema: Schema, env: DistEnv, seed: int, where: str,
                  reads: ModelReads | None = None) -> BatchSource:
    """This rank's batches from a converted split (manifest directory), via the tf.data reader.

    The validation split is read again from its start at every evaluation, so its source
    keeps the verified shards (hash checks, gs:// downloads) for the next evaluation; the
    training split is read once, through, with the reader's bounded two-group cache.
    `reads` (the model's truncation) limits what is parsed, and lets a packed split be read.
    """
    from components.records.reader import ReaderOptions, read_batches
    from components.records.shards import VerifiedShards

    options = ReaderOptions(
        batch_size=data.rank_batch_size(env.world_size, where), shuffle=data.shuffle, seed=seed,
        repeat=data.repeat, drop_remainder=data.drop_remainder, skip_corrupt=data.skip_corrupt,
        cache_dir=data.cache_dir, num_parallel_reads=data.num_parallel_reads, prefetch=data.prefetch,
        reads=reads,
    )
    if data.data_service_dispatcher and where == "train_data":
        from components.train.service_source import service_source

        return service_source(data, schema, env, seed, options)
    verified = VerifiedShards(data.cache_dir) if where == "validation_data" else None
    return lambda start: read_batches(data.inputs, schema, options, rank=env.rank,
                                      world_size=env.world_size, start_batch=start, verified=verified)


class _Optimizers:
    """Dense Adam (keyed by parameter name) + TorchRec's fused embedding optimizer, one state dict."""

    def __init__(self, dmp: nn.Module, config: RecapConfig, tasks: list[str],
                 bf16_weight_copies: list[Linear] | None = None) -> None:
        from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

        params = dense_named_parameters(dmp)
        self.dense = build_dense_optimizer(params, tasks, config.optimizer, bf16_weight_copies)
        keyed = KeyedOptimizerWrapper(params, lambda _: self.dense)
        parts = [("dense", keyed)]
        fused = getattr(dmp, "fused_optimizer", None)
        if fused is not None and fused.params:
            parts.append(("embedding", fused))
        self.combined = CombinedOptimizer(parts)
        self.schedules = group_schedules(config.optimizer, tasks)

    def set_step(self, step: int) -> dict[str, float]:
        return set_learning_rates(self.dense, self.schedules, step)

    def step(self) -> None:
        self.combined.step()
        self.combined.zero_grad(set_to_none=True)


def _autocast(config: RecapConfig, env: DistEnv):
    if not numerics.uses_bf16_autocast(config.training, env.device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=env.device.type, dtype=torch.bfloat16)


def _global_sum(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum over ranks, on the backend's device (nccl reduces CUDA tensors only); returned on CPU."""
    values = values.detach().float().to(env.device, copy=True)
    if env.world_size > 1:
        dist.all_reduce(values)
    return values.cpu()


def _global_mean(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    return _global_sum(values, env) / env.world_size


def _use_bf16_weight_copies(config: RecapConfig, env: DistEnv, debug_loop: bool) -> bool:
    training = config.training
    if not numerics.uses_bf16_autocast(training, env.device) or training.gradient_accumulation > 1 or debug_loop:
        return False
    if not config.optimizer.fused_adam:
        return False
    if training.bf16_weight_copies is None:
        return env.device.type == "cpu"
    return training.bf16_weight_copies


def build_training_model(config: RecapConfig, schema: Schema, env: DistEnv, debug_loop: bool = False
                         ) -> tuple[HeavyRanker, nn.Module, _Optimizers]:
    """The seeded model, sharded by DMP, with its optimizers: (unwrapped model, dmp, optimizers).

    The model takes IDs hashed on the host (`feed.fed_source`, or `records.batch.with_hashed_ids`
    with `model.id_tables()`), not raw ones.
    """
    training = config.training
    torch.manual_seed(training.seed)
    model = HeavyRanker(config.model, schema, sparse_device="meta", hash_ids_in_forward=False)
    copies = []
    if _use_bf16_weight_copies(config, env, debug_loop):
        copies = use_bf16_weight_copies(model)  # before DDP wraps the model: the masters leave it
    dmp, plan = shard_model(model, config.model, config.optimizer, env, training.seed,
                            static_graph=training.gradient_accumulation == 1,
                            batch_size=config.train_data.rank_batch_size(env.world_size, "train_data"))
    if env.is_chief:
        log.info("sharding plan (world_size=%d):\n%s", env.world_size, plan)
        if copies:
            log.info("bf16: %d Linear layers compute with bf16 weight copies kept by the optimizer", len(copies))
    return model, dmp, _Optimizers(dmp, config, list(schema.task_names), copies)


def forward_loss(dmp: nn.Module, batch: RecapBatch, config: RecapConfig, env: DistEnv,
                 pos_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted loss, per-task losses) of one batch already on the device."""
    with _autocast(config, env):
        out = dmp(batch)
        return multi_task_loss(out["logits"], batch.labels, batch.weights, pos_weight)


def train_step(dmp: nn.Module, optimizers: _Optimizers, micro_batches: list[RecapBatch], config: RecapConfig,
               env: DistEnv, pos_weight: torch.Tensor, debug_step: int | None = None) -> torch.Tensor:
    """One optimizer step over `micro_batches` (gradient accumulation); returns summed per-task losses.

    The losses stay on the device: copying them to the host would wait for the step to finish.
    """
    task_loss_sum = torch.zeros(pos_weight.shape[0], device=pos_weight.device)
    anomaly = torch.autograd.detect_anomaly() if debug_step is not None else contextlib.nullcontext()
    for index, batch in enumerate(micro_batches):
        batch = batch.to(env.device, non_blocking=True)
        # DDP all-reduces the gradients once per step, in the last micro-batch's backward pass
        last = index == len(micro_batches) - 1
        with contextlib.nullcontext() if last else gradient_sync_skipped(dmp):
            with anomaly:
                loss, per_task = forward_loss(dmp, batch, config, env, pos_weight)
            with anomaly:
                (loss / len(micro_batches)).backward()
        task_loss_sum += per_task.detach().float()
    if debug_step is not None:
        _debug_report(dmp, debug_step, loss, batch)
    optimizers.step()
    return task_loss_sum


def evaluate(dmp: nn.Module, source: BatchSource, num_steps: int, config: RecapConfig, env: DistEnv,
             pos_weight: torch.Tensor, tasks: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean per-task loss and per-task AUROC over the first `num_steps` batches of the validation data (all ranks)."""
    dmp.eval()
    total = torch.zeros(len(tasks), device=pos_weight.device)  # copied to the host once, at the end
    auroc = TaskAUROC(tasks, device=pos_weight.device)  # on the device: nccl syncs device tensors only
    batches = open_source(source, 0, "validation_data")
    try:
        with torch.no_grad(), _autocast(config, env):
            for index in range(num_steps):
                (batch,) = next_batches(batches, 1, "validation_data", index, "training.num_eval_steps")
                batch = batch.to(env.device, non_blocking=True)
                out = dmp(batch)
                total += multi_task_loss(out["logits"], batch.labels, batch.weights, pos_weight)[1].float()
                auroc.update(out["probabilities"].detach(), batch.labels)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # the reader's prefetch and cache go now, not when collected
    dmp.train()
    mean = _global_mean(total / max(num_steps, 1), env)
    return dict(zip(tasks, mean.tolist(), strict=True)), auroc.compute()


def train(config: RecapConfig, schema: Schema, env: DistEnv, train_batches: BatchSource,
          eval_batches: BatchSource | None = None, debug_loop: bool = False) -> TrainResult:
    training = config.training
    tasks = list(schema.task_names)
    config.train_data.rank_batch_size(env.world_size, "train_data")  # a batch that does not divide fails here
    formats = numerics.configure(training, env.device)
    if env.is_chief:
        log.info("number formats on %s: %s", env.device.type, format_metrics(**formats))
    if env.device.type == "cpu":  # tuned for CPU gradient buffers; on a GPU only host batches would see it
        reuse_large_allocations()
    model, dmp, optimizers = build_training_model(config, schema, env, debug_loop)
    pipelined = uses_train_pipeline(training, env.device, debug_loop)
    train_batches = fed_source(train_batches, model.id_tables(), env.device)
    eval_batches = fed_source(eval_batches, model.id_tables(), env.device) if eval_batches is not None else None
    export_group = export_wait_group(env)
    pos_weight = torch.tensor([(config.model.tasks.get(t).pos_weight if t in config.model.tasks else 1.0)
                               for t in tasks], device=env.device)

    step, batches_consumed, resumed_from = _restore(dmp, optimizers, config, env)
    tensorboard = TensorBoard(config, env)
    read = open_source(train_batches, batches_consumed, "train_data")
    if step == 0 and not training.initial_checkpoint_dir and config.model.output_bias_init == "label_rate":
        (first,) = next_batches(read, 1, "train_data", 0)
        model.set_output_bias(_label_log_odds(first, pos_weight.cpu(), env))
        read = itertools.chain([first], read)
    accumulation = training.gradient_accumulation
    batches = CheckedBatches(read, accumulation, training.data_check_every_n, "train_data", batches_consumed)
    global_batch = config.train_data.global_batch(env.world_size)
    progress = _progress(env, training.num_train_steps, step)
    window_start, window_steps = time.perf_counter(), 0
    losses: dict[str, float] = {}
    history: list[tuple[int, float]] = []
    eval_losses: dict[str, float] = {}
    throughput = 0.0
    dmp.train()
    steps = None
    if pipelined:
        steps = PipelinedSteps(dmp, optimizers.combined, env.device,
                               lambda batch: forward_loss(dmp, batch, config, env, pos_weight),
                               batches, step, training.num_train_steps)
        if env.is_chief:
            log.info("steps run through TorchRec's TrainPipelineSparseDist on %s", env.device)
    while step < training.num_train_steps:
        rates = optimizers.set_step(step)
        if steps is not None:
            task_loss_sum = steps.next()
        else:
            micro_batches = batches.next(training.num_train_steps - step)
            task_loss_sum = train_step(dmp, optimizers, micro_batches, config, env, pos_weight,
                                       debug_step=step if debug_loop else None)
        batches_consumed += accumulation
        step += 1
        window_steps += 1
        progress.update(1)

        if step % training.train_log_every_n == 0 or debug_loop or step == training.num_train_steps:
            mean = _global_mean(task_loss_sum / accumulation, env)
            losses = dict(zip(tasks, mean.tolist(), strict=True))
            history.append((step, float(mean.mean())))
            elapsed = time.perf_counter() - window_start
            throughput = window_steps * accumulation * global_batch / max(elapsed, 1e-9)
            if env.is_chief:
                log.info("%s", format_metrics(step=step, loss=float(mean.mean()), examples_per_s=throughput,
                                              **{f"lr_{k}": v for k, v in rates.items()}))
                log.info("step=%d %s", step, format_metrics(**{f"loss_{k}": v for k, v in losses.items()}))
                tensorboard.scalars("train_loss", losses | {"mean": float(mean.mean())}, step)
                tensorboard.scalars("learning_rate", rates, step)
                tensorboard.scalars("throughput", {"examples_per_s": throughput}, step)
            if not all(math.isfinite(v) for v in losses.values()):
                raise DataError(f"train_data: loss is not finite at step {step}: {losses}")
            window_start, window_steps = time.perf_counter(), 0

        if eval_batches is not None and training.num_eval_steps and (
            step % training.eval_every_n == 0 or step == training.num_train_steps
        ):
            paused = time.perf_counter()
            if steps is not None:
                steps.pause()
            eval_losses, eval_auroc = evaluate(dmp, eval_batches, training.num_eval_steps, config, env, pos_weight, tasks)
            window_start += time.perf_counter() - paused  # examples_per_s measures training only
            if env.is_chief:
                log.info("eval step=%d %s", step, format_metrics(
                    loss=sum(eval_losses.values()) / len(eval_losses),
                    **{f"loss_{k}": v for k, v in eval_losses.items()}))
                tensorboard.scalars("eval_loss", eval_losses, step)
                log.info("eval step=%d %s", step, format_metrics(**{f"auroc_{k}": v for k, v in eval_auroc.items()}))
                tensorboard.scalars("eval_auroc", {k: v for k, v in eval_auroc.items() if math.isfinite(v)}, step)

        if step % training.checkpoint_every_n == 0 or step == training.num_train_steps:
            paused = time.perf_counter()
            _save(dmp, optimizers, config, env, step, batches_consumed)
            tensorboard.sync()
            window_start += time.perf_counter() - paused
    progress.close()
    tensorboard.close()
    # The loop always saves its last step, and a run resumed at the end has that step committed.
    final_dir = checkpoint.step_dir(training.save_dir, step)
    model_dir = export_on_chief(config, schema, env, final_dir, step, export_group)
    return TrainResult(step=step, resumed_from=resumed_from, checkpoint_dir=final_dir, model_dir=model_dir,
                       losses=losses, examples_per_s=throughput, eval_losses=eval_losses,
                       history=tuple(history))


def _label_log_odds(batch: RecapBatch, pos_weight: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Per task, the log-odds minimizing the weighted BCE of a constant logit on this global batch."""
    weights, labels = batch.weights.float().cpu(), batch.labels.float().cpu()
    sums = _global_sum(torch.stack([(weights * labels).sum(0), (weights * (1 - labels)).sum(0)]), env)
    positive, negative = sums[0] * pos_weight, sums[1]
    return torch.log((positive + 0.5) / (negative + 0.5))


def _state(dmp: nn.Module, optimizers: _Optimizers, step: int, batches_consumed: int) -> dict:
    return {"model": dmp.state_dict(), "optim": optimizers.combined.state_dict(),
            "progress": torch.tensor([step, batches_consumed], dtype=torch.int64)}


def _save(dmp, optimizers, config: RecapConfig, env: DistEnv, step: int, batches_consumed: int) -> None:
    started = time.perf_counter()
    target = checkpoint.save(config.training.save_dir, step, _state(dmp, optimizers, step, batches_consumed),
                             env.rank, extra={"batches_consumed": batches_consumed})
    if env.is_chief:  # housekeeping: a failure here must not stop the run (nor strand the other ranks)
        try:
            removed = len(checkpoint.prune(config.training.save_dir, config.training.checkpoint_max_to_keep))
        except Exception as exc:
            removed = 0
            log.warning("could not prune old checkpoints under %s: %s", config.training.save_dir, exc)
        log.info("checkpoint committed %s", format_metrics(step=step, uri=target, seconds=time.perf_counter() - started,
                                                            pruned=removed))


def _restore(dmp, optimizers: _Optimizers, config: RecapConfig, env: DistEnv) -> tuple[int, int, int | None]:
    """Resume from the newest committed checkpoint, else warm-start from initial_checkpoint_dir.

    Rank 0 picks the checkpoint and broadcasts its choice: ranks listing a directory each on
    their own could pick different steps (an object store's listing may lag, a commit may
    land between two ranks' listings), and ranks resumed at different steps deadlock.
    """
    training = config.training

    def newest_step() -> int | None:
        latest = checkpoint.latest_checkpoint(training.save_dir)
        return latest[0] if latest else None

    step = on_chief(newest_step, "list the committed checkpoints", env)
    if step is not None:
        directory = checkpoint.step_dir(training.save_dir, step)
        optimizers.combined.init_state()
        state = _state(dmp, optimizers, 0, 0)
        checkpoint.load(directory, state)
        dmp.load_state_dict(state["model"])
        optimizers.combined.load_state_dict(state["optim"])
        done, consumed = (int(v) for v in state["progress"].tolist())
        if env.is_chief:
            log.info("resumed from committed checkpoint %s", format_metrics(
                step=done, uri=directory, batches_consumed=consumed))
        return done, consumed, step
    if training.initial_checkpoint_dir:
        directory = on_chief(lambda: checkpoint.resolve_initial_checkpoint(training.initial_checkpoint_dir),
                              "find the initial checkpoint", env)
        state = {"model": dmp.state_dict()}
        checkpoint.load(directory, state)
        dmp.load_state_dict(state["model"])
        if env.is_chief:
            log.info("warm start from %s (model weights only)", directory)
    return 0, 0, None


def _progress(env: DistEnv, total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step",
                disable=not (env.is_chief and sys.stderr.isatty()))


def _debug_report(dmp: nn.Module, step: int, loss: torch.Tensor, batch: RecapBatch) -> None:
    """--debug_loop: per-step loss, gradient norms and input statistics (slow, verbose)."""
    norms = {name: float(p.grad.norm()) for name, p in dmp.named_parameters() if p.grad is not None}
    worst = sorted(norms.items(), key=lambda kv: -kv[1])[:5]
    log.info("debug step=%d loss=%.6g batch=%d label_means=%s", step, float(loss.detach()), batch.batch_size,
             [round(v, 4) for v in batch.labels.mean(0).tolist()])
    log.info("debug step=%d largest gradient norms: %s", step, ", ".join(f"{n}={v:.4g}" for n, v in worst))
    if not all(math.isfinite(v) for v in norms.values()):
        raise DataError(f"non-finite gradient at step {step}")
