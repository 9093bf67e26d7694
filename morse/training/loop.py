"""The training loop: SGD with poly decay, validation Dice, atomic checkpoints, exact resume, DDP.

A run folder holds ``config.yaml`` (resolved), ``last.pt`` (resume point), ``best.pt`` (best
validation Dice of the rendered output), ``curves.csv``, ``progress.png``, ``train.log`` (the
plan and one line per logging interval, appended on resume) and, when the run has validation
cases, ``calibration.json``: the render budget measured at the end for last.pt's and best.pt's
weights, also stored in each (:mod:`morse.model.calibration`). Launch several
processes with ``torchrun --nproc_per_node=N -m morse train CONFIG``: each rank trains on
its share of every global batch, DDP averages the gradients, rank 0 logs and writes files.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from morse.config import Config, config_from_dict, config_to_dict, save_config
from morse.data.prepare import PreparedData, prepare_data
from morse.data.split import announce_split, check_same_split
from morse.data.volume import Volume
from morse.device import autocast_context, make_grad_scaler, set_threads
from morse.errors import ConfigError, TrainingDiverged
from morse.io.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    keep_best,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
)
from morse.io.lock import FolderLock
from morse.io.progress import Progress
from morse.losses import build_loss
from morse.metrics import case_dice
from morse.model import Morse
from morse.model.build import build_model, check_buildable
from morse.model.calibration import calibrate_files
from morse.model.settings import InferenceConfig
from morse.model.volumes import predict_volume
from morse.training.curves import CurveLog, plot_curves
from morse.training.distributed import (
    DistributedContext,
    cleanup,
    init_distributed,
    is_launch_main,
    reduce_dict,
    wrap_model,
)
from morse.training.lines import describe_plan, interval_line
from morse.training.resume import fit_optimizer_state, load_resume_state
from morse.training.rng import capture_rng_state, restore_rng_state, seed_everything
from morse.training.sampling import SeededItems, StepBatchSampler

__all__ = ["train", "TrainResult", "validate"]

RUN_FILES = (LAST_NAME, BEST_NAME, "config.yaml", "curves.csv")
"""What a run leaves in its folder; a new run refuses a folder holding any of them."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    best_dice: float
    seconds: float


def train(
    cfg: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    data: PreparedData | None = None,
) -> TrainResult:
    """Train (or resume) the model of ``cfg`` into ``run_dir``.

    Args:
        cfg: the run config; on resume None (the one saved in the run folder), or the same
            config again (one that differs is refused, its differing keys named).
        run_dir: output folder; created if needed.
        resume: continue from ``run_dir/last.pt`` exactly where it stopped.
        progress: show a progress bar on a terminal, else one line per ``train.log_every``
            steps on stdout (rank 0); ``run_dir/train.log`` gets the lines either way.
        data: already prepared data (tests, the demo); default: ``prepare_data(cfg.data)``.
    """
    run_dir = Path(run_dir)
    # One writer per run folder: torchrun's other ranks write nothing, so only rank 0 locks.
    lock = FolderLock(run_dir, "morse train") if is_launch_main() else contextlib.nullcontext()
    with lock:
        state = load_resume_state(run_dir, cfg) if resume else None
        if state is not None:
            cfg = config_from_dict(state["config"], origin=str(run_dir / LAST_NAME))
        else:
            _refuse_finished_run(run_dir)
        ctx = init_distributed(None if cfg.train.device == "auto" else cfg.train.device)
        try:
            return _train(cfg, run_dir, state, ctx, progress, data)
        finally:
            cleanup(ctx)


def _refuse_finished_run(run_dir: Path) -> None:
    """A new run never replaces an earlier run's files (a stale best.pt would be scored)."""
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found:
        raise FileExistsError(
            f"{run_dir} already holds a run ({', '.join(found)}); resume it with --resume, or "
            "choose another output folder"
        )


def _train(
    cfg: Config,
    run_dir: Path,
    state: dict | None,
    ctx: DistributedContext,
    progress: bool,
    data: PreparedData | None,
) -> TrainResult:
    started = time.perf_counter()
    threads = set_threads(cfg.train.threads)
    seed_everything(cfg.train.seed, ctx.rank)
    check_buildable(cfg)
    data = data or prepare_data(cfg.data, check=cfg.train.check_data and state is None)
    if state is not None and data.split is not None:
        check_same_split(data.split, run_dir / "split.json")
    cfg = _checkpoint_to_score(cfg, bool(data.val), ctx.is_main and state is None)
    device = ctx.device
    model = build_model(cfg, data.in_channels, data.num_classes).to(device)
    loss_fn = build_loss(cfg.loss, data.num_classes)
    optimizer = build_optimizer(cfg, model)
    total = cfg.train.iterations
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1 - step / total) ** cfg.train.poly_power
    )
    start_step, best = 0, -math.inf
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        fit_optimizer_state(optimizer)
        scheduler.load_state_dict(state["scheduler"])
        start_step, best = int(state["step"]), float(state.get("best_metric", -math.inf))
        restore_rng_state(state["rng"])
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        if data.split is not None:
            announce_split(data.split, run_dir)
    curves = CurveLog(run_dir / "curves.csv") if ctx.is_main else None
    if curves is not None and state is not None:
        curves.truncate_after(start_step)

    sampler = StepBatchSampler(
        len(data.train), cfg.train.batch_size, cfg.train.seed, total, start_step,
        ctx.rank, ctx.world_size,
    )
    # The loader gets its own generator: its iterator draws a base seed when created, and
    # drawing it from the global generator would shift every random number after a resume.
    loader = DataLoader(
        SeededItems(data.train), batch_sampler=sampler, num_workers=cfg.data.num_workers,
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )
    network = wrap_model(model, ctx)
    scaler = make_grad_scaler(cfg.train.precision, device)
    bar = Progress(total, start=start_step, enabled=progress and ctx.is_main, stream=sys.stdout,
                   log_file=run_dir / "train.log" if ctx.is_main else None)
    if ctx.is_main:
        when = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
        bar.write(f"{'resumed at' if state else 'started at'} step {start_step}, {when}")
        for line in describe_plan(cfg, data, str(device), threads):
            bar.write(line)

    def checkpoint(step: int) -> dict:
        return make_checkpoint(
            model=model.state_dict(), optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(), step=step, rng=capture_rng_state(),
            config=config_to_dict(cfg), best_metric=float(best), class_names=data.class_names,
            in_channels=data.in_channels, preprocessing=data.preprocessing,
        )

    step = start_step
    window_start, window_parts = time.perf_counter(), []
    try:
        for batch in loader:
            network.train()
            image = batch["image"].to(device, non_blocking=True)
            label = batch["label"].to(device, non_blocking=True)
            with autocast_context(device, cfg.train.precision):
                output = network(image)
            loss, parts = loss_fn(output, label, step, total)
            _stop_if_not_finite(loss, parts, step, run_dir)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            window_parts.append(parts)
            if step % cfg.train.log_every == 0 or step == total:
                speed = len(window_parts) / (time.perf_counter() - window_start)
                row = reduce_dict(_mean_parts(window_parts), ctx)
                row.update(lr=scheduler.get_last_lr()[0], it_per_s=speed)
                if curves is not None:
                    curves.log(step, **row)
                bar.report(interval_line(step, total, row),
                           postfix=f"loss {row['loss']:.4f}, {speed:.2f} it/s")
                window_start, window_parts = time.perf_counter(), []
            bar.update(1)
            if data.val and (step % cfg.train.val_every == 0 or step == total):
                scores = validate(model, data.val, cfg, device, ctx)
                if curves is not None:
                    curves.log(step, val_dice=scores["rendered"],
                               val_dice_coarse=scores["coarse"])
                if ctx.is_main:
                    bar.write(f"step {step}/{total} validation Dice rendered "
                              f"{scores['rendered']:.4f} coarse {scores['coarse']:.4f}")
                    if scores["rendered"] > best:
                        # best moves only once best.pt holds it, so last.pt never claims more
                        keep_best(run_dir, scores["rendered"], checkpoint(step))
                        best = scores["rendered"]
            if ctx.is_main and (step % cfg.train.checkpoint_every == 0 or step == total):
                save_checkpoint(run_dir / LAST_NAME, checkpoint(step))
        if ctx.is_main and model.renderer is not None:
            _calibrate_at_end(model, cfg, data.val, run_dir, device, step, bar.write)
        # the command prints its own summary; the log file gets one, so a finished run's log
        # tells it from one that was killed
        bar.write(f"finished at step {step} in {time.perf_counter() - started:.0f} s",
                  screen=False)  # a no-op on other ranks: they have no log file
    except KeyboardInterrupt:
        if ctx.is_main:
            save_checkpoint(run_dir / LAST_NAME, checkpoint(step))
            bar.write(f"interrupted at step {step}: saved {run_dir / LAST_NAME}; "
                      f"continue with: morse train --resume {run_dir}")
        raise
    finally:
        bar.close()
    if ctx.is_main:
        plot_curves(run_dir / "curves.csv", run_dir / "progress.png")
    return TrainResult(run_dir, step, float(best), time.perf_counter() - started)


def _calibrate_at_end(model: Morse, cfg: Config, val: Sequence[Volume], run_dir: Path,
                      device: torch.device, step: int, say) -> None:
    """The render budget of last.pt's weights and best.pt's, measured on the validation cases
    (:mod:`morse.model.calibration`) and stored in both and in calibration.json; one line
    when there is no validation case."""
    files = {LAST_NAME: (step, lambda: model)}
    if (run_dir / BEST_NAME).is_file():
        best = load_checkpoint(run_dir / BEST_NAME)
        files[BEST_NAME] = (int(best.get("step", -1)), lambda: _with_weights(model, best["model"]))
    calibrate_files(run_dir, files, lambda: ((volume.image, None) for volume in val),
                    InferenceConfig.from_config(cfg, device), cfg.model.render_margin, say)


def _with_weights(model: Morse, weights: dict) -> Morse:
    """A copy of ``model`` holding ``weights``."""
    other = copy.deepcopy(model)
    other.load_state_dict(weights)
    return other


def _stop_if_not_finite(
    loss: torch.Tensor, parts: dict[str, float], step: int, run_dir: Path
) -> None:
    """Stop before a non-finite loss reaches the weights; last.pt keeps the last good step."""
    if not torch.isfinite(loss):
        shown = ", ".join(f"{name} {value:.4g}" for name, value in parts.items())
        raise TrainingDiverged(
            f"{run_dir}: the loss is {loss.item()} at step {step + 1} ({shown}); nothing of this "
            f"step was saved, {run_dir / LAST_NAME} keeps the last checkpoint; lower train.lr "
            "or check the data's intensities"
        )


def _checkpoint_to_score(cfg: Config, has_val: bool, announce: bool) -> Config:
    """The run's config with ``eval.checkpoint`` it can honour: without validation cases
    there is no best checkpoint, so the run records (and says) that last.pt is scored."""
    if has_val or cfg.eval.checkpoint == "last":
        return cfg
    if announce:
        print("no validation cases: best.pt is not written; eval.checkpoint is set to last "
              "(the final model is scored)")
    return replace(cfg, eval=replace(cfg.eval, checkpoint="last"))


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or AdamW, as ``train.optimizer`` says."""
    if cfg.train.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum,
                               weight_decay=cfg.train.weight_decay)
    if cfg.train.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.train.lr,
                                 weight_decay=cfg.train.weight_decay)
    raise ConfigError(f"train.optimizer must be sgd or adamw, got {cfg.train.optimizer!r}")


def _mean_parts(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = {key for part in parts for key in part}
    return {key: float(np.mean([p[key] for p in parts if key in p])) for key in sorted(keys)}


def _mean_dice(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """Mean over foreground classes of :func:`case_dice` for (*spatial) label maps."""
    return float(np.mean(list(case_dice(pred, truth, num_classes).values())))


@torch.no_grad()
def validate(
    model: Morse,
    volumes: Sequence[Volume],
    cfg: Config,
    device: torch.device,
    ctx: DistributedContext | None = None,
) -> dict[str, float]:
    """Mean foreground Dice of the coarse and rendered outputs over validation volumes.

    Dice is evaluation's (:func:`morse.metrics.case_dice`), with its empty-mask
    policy: a class absent from both maps scores 1, from one of them 0; the mean is over all
    foreground classes of every volume. Under DDP each rank scores its share of the volumes
    and the means are combined.
    """
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    # never TTA: it would multiply the backbone passes of every validation by 2^D
    settings = replace(InferenceConfig.from_config(cfg, device), tta=False)
    sums = torch.zeros(3, dtype=torch.float64)
    for volume in list(volumes)[rank::world]:
        prediction = predict_volume(model, volume.image, settings)
        sums += torch.tensor([
            _mean_dice(prediction.coarse, volume.label, model.num_classes),
            _mean_dice(prediction.rendered, volume.label, model.num_classes),
            1.0,
        ], dtype=torch.float64)
    if ctx is not None and ctx.is_distributed:
        reduced = sums.to(device)
        torch.distributed.all_reduce(reduced)
        sums = reduced.cpu()
    count = max(sums[2].item(), 1.0)
    model.train()
    return {"coarse": sums[0].item() / count, "rendered": sums[1].item() / count}
