"""A whole training run: config, data, model, schedule, epochs, checkpoints, reports, resume.

train.py turns the command line into a `Config` and calls `fit` (or `evaluate_checkpoint`). Under torchrun
every rank runs everything here (`make_context` joins the world); only `ctx.is_main` prints and writes
files. Collective calls (model.state_dict, model.to_canonical, evaluation) are made on every rank.
"""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, fields
from pathlib import Path

import torch

from . import checkpoint as ckpt
from . import world
from .batch_log import StepLog
from .config import EVALUATION, PLACEMENT, Config, resume_config
from .config_checks import check_classes, check_config, same_folder
from .data import CorruptLog
from .world import Context
from .device import check_device, default_device_type
from .engine import InputSpec, NonFiniteLoss, evaluate, train_one_epoch
from .errors import TrainError
from .gpu_decode import DecodedLoader, resolve_decode
from .layouts import build_model, resolve_layout as resolve_process_layout
from .model import canonical_shapes
from .optim import get_lr, load_momentum_buffers, make_optimizer, make_schedule, momentum_buffers, set_lr
from .report import colourfulness
from .run_data import epoch_loaders, open_data
from .run_folder import claim_run_dir, new_run_dir, write_epoch
from .runlock import RunFolderLock
from .weights_io import initial_weights, load_weights

PAPER_BATCH = 128  # the batch the paper's lr 0.01 goes with (linear scaling reference)


def make_context(cfg: Config) -> Context:
    """The process's place in the world: under torchrun one tower of one tower pair (world.setup), otherwise
    a single process. Setup mistakes (odd world size, a device naming one GPU) are the same on every rank,
    so rank 0 reports them and the others stop quietly."""
    device = cfg.device if cfg.device != "auto" else default_device_type()
    try:
        return world.setup(device=device, timeout_s=cfg.dist_timeout)
    except ValueError as error:
        if os.environ.get("RANK", "0") != "0":
            raise world.Stopped(str(error)) from None
        raise TrainError(str(error)) from None


def resolve_layout(layout: str, ctx: Context, devices: list | None = None) -> str:
    """auto: tower-parallel under torchrun, two-device with --devices or on a machine with 2+ GPUs, merged
    otherwise. --devices places the two-device layout's towers; another layout would ignore it."""
    if devices and (layout not in ("auto", "two-device") or ctx.distributed):
        raise TrainError(f"--devices places the two-device layout's towers, and this run's layout is "
                         f"{'tower-parallel' if ctx.distributed else layout}: drop --devices, or pass --layout two-device.")
    if layout == "auto" and not ctx.distributed:
        return "two-device" if devices or torch.cuda.device_count() >= 2 else "merged"
    return resolve_process_layout(None if layout == "auto" else layout, ctx)


def resolve_device(name: str, ctx: Context) -> torch.device:
    if ctx.distributed:
        return ctx.device  # each rank's own: cuda:LOCAL_RANK or the CPU (world.setup)
    return check_device(default_device_type() if name == "auto" else name)


def effective_lr(cfg: Config, ctx: Context) -> tuple[float, str]:
    batch = cfg.batch_size * ctx.num_pairs
    if cfg.lr_scaling == "linear":
        lr = cfg.lr * batch / PAPER_BATCH
        return lr, f"effective batch {batch} ({cfg.batch_size} per tower pair x {ctx.num_pairs}); lr {lr:g} = {cfg.lr:g} x {batch}/{PAPER_BATCH} (linear scaling)"
    return cfg.lr, f"effective batch {batch} ({cfg.batch_size} per tower pair x {ctx.num_pairs}); lr {cfg.lr:g} as given (no scaling)"


class Run:
    """Everything one run holds; built by `setup`, advanced by `fit`."""

    def __init__(self, cfg: Config, ctx: Context, log=print, given: dict | None = None):
        self.ctx, self.log = ctx, log
        self.say = log if ctx.is_main else (lambda *a, **k: None)
        # The main rank goes first: it generates the built-in set and caches the mean, which the others then
        # find; a mistake (a bad flag, a missing folder) is reported once, by the main rank.
        state = ctx.main_first(lambda: self._prepare(cfg, given or {}))
        self._model(self.cfg, ctx)
        self.history, self.epoch, self.step, self.best = [], 0, 0, float("inf")
        self.last_checkpoint: str | None = None  # the newest checkpoint on disk, named when a run stops
        self.step_log: StepLog | None = None  # batch-job lines and TensorBoard scalars (open_logs)
        self.board = None  # board.Board with --tensorboard, on the main rank
        if state:
            self._restore(state)
        else:
            self.run_dir = new_run_dir(cfg)
            if self.start_weights is not None:  # collective in the tower-parallel layout, like every load
                self.model.load_state_dict(initial_weights(self.model.state_dict(), self.start_weights)[0])
        self.show = ctx.is_main

    def _prepare(self, cfg: Config, given: dict) -> dict | None:
        """Config, data and placement: everything checked before the model is built. Returns the resumed state."""
        if cfg.resume is not None and cfg.init_from is not None:
            raise TrainError("--resume continues a run and --init-from starts a new one from another run's weights: "
                             "pass one of them.")
        state = self._find_resume(cfg)
        self.cfg = cfg = resume_config(state["config"], given) if state else cfg
        moved = state is not None and "data" in given and not same_folder(given["data"], state["config"].get("data"))
        if state:
            cfg.data = given["data"] if moved else cfg.data
            cfg.mean = state.get("mean") or cfg.mean  # the input the weights were trained on, wherever the data is
        check_config(cfg)
        # Each pair reads its own shard: the first rank of each pair names the unreadable images it meets.
        self.corrupt = CorruptLog(cfg.max_corrupt, self.log if self.ctx.tower in (None, 0) else self.say)
        self._data(cfg, resumed=state is not None)
        if state:
            check_classes(self.splits.classes, state, self.root)
            if moved:
                self.say(f"note: the data moved: {state['config'].get('data') or 'the built-in set'} -> {self.root}, "
                         f"with the same {self.num_classes} classes as the checkpoint")
        self.layout = resolve_layout(cfg.layout, self.ctx, cfg.devices)
        self.device = resolve_device(cfg.device, self.ctx)
        if cfg.amp not in (None, "bf16"):
            raise TrainError(f"--amp {cfg.amp!r}: the only mixed precision offered is bf16.")
        if cfg.amp and self.device.type != "cuda":
            raise TrainError("--amp bf16 needs a CUDA device and this run is on the CPU: leave --amp out.")
        self.decode = resolve_decode(cfg.decode, self.device, self.root)
        self.start_weights, self.init_note = None, ""
        if cfg.init_from is not None and not state:  # checked here, before any model is built
            self.start_weights = load_weights(cfg.init_from)
            shapes = canonical_shapes(self.num_classes, cfg.in_channels)
            self.init_note = initial_weights({k: torch.empty(v, device="meta") for k, v in shapes.items()},
                                             self.start_weights)[1]
        return state

    def _find_resume(self, cfg: Config) -> dict | None:
        if cfg.resume is None:
            return None
        path = ckpt.latest_checkpoint(cfg.out) if cfg.resume == "auto" else Path(cfg.resume)
        if path is None:
            self.say(f"--resume auto: no checkpoint under {cfg.out}/, starting a new run")
            return None
        state = ckpt.load_checkpoint(path)
        self.say(f"resuming from {state['path']} (epoch {state['epoch']} done)")
        return state

    def _data(self, cfg: Config, resumed: bool = False) -> None:
        data = open_data(cfg, self.corrupt, self.say, resumed)
        self.root, self.splits, self.num_classes, self.mean = data.root, data.splits, data.num_classes, data.mean

    def _model(self, cfg: Config, ctx: Context) -> None:
        world.seed_all(cfg.seed)  # the same seed on every rank: the same initial weights in every layout
        self.model = build_model(self.layout, self.num_classes, cfg.in_channels, cfg.init, cfg.dropout,
                                 device=self.device, devices=cfg.devices, ctx=ctx)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN times its algorithms once and keeps the best
        if cfg.compile:
            self.model.compile()  # in place: the module (its state_dict, its layout methods) stays the same object
        self.lr, self.lr_rule = effective_lr(cfg, ctx)
        self.optimizer = make_optimizer(self.model, self.lr, cfg.momentum, cfg.weight_decay, cfg.bias_decay)
        self.schedule = make_schedule(cfg.schedule, self.lr, cfg.patience, cfg.lr_steps)
        first = next(self.model.parameters()).device  # the layout protocol: input and logits on the first device
        self.spec = InputSpec(first, torch.tensor(self.mean, dtype=torch.float32), cfg.pca, cfg.channels_last, cfg.amp)

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.schedule.load_state_dict(state["schedule"])
        set_lr(self.optimizer, self.schedule.lr)  # no buffers yet: only sets lr
        load_momentum_buffers(self.model, self.optimizer, self.model.from_canonical(state["momentum"]))
        pairs = state.get("num_pairs", 1)
        if pairs != self.ctx.num_pairs:
            self.say(f"note: this checkpoint was written by {pairs} tower pair(s), now {self.ctx.num_pairs}: the "
                     f"effective batch becomes {self.cfg.batch_size * self.ctx.num_pairs} and the lr continues "
                     f"from the checkpoint ({self.schedule.lr:g})")
        self.history, self.epoch, self.step = list(state["metrics"]), state["epoch"], state["step"]
        self.best = min((r["val_top1_error"] for r in self.history), default=float("inf"))
        self.run_dir = ckpt.run_dir_of(state["path"])
        self.last_checkpoint = state["path"]

    def banner(self) -> str:
        cfg = self.cfg
        data = f"{self.root} (built-in synthetic set)" if cfg.data is None else str(self.root)
        return (f"config:\n{cfg.describe()}\n"
                f"data {data}: {self.num_classes} classes, {len(self.splits.train)} train / {len(self.splits.val)} val "
                f"images; mean {[round(m, 2) for m in self.mean]}\n"
                f"layout {self.layout} on {self.spec.device}; processes: {self.ctx.describe()}; JPEG decode: {self.decode}\n"
                f"{self.lr_rule}; schedule {cfg.schedule}\n"
                + (f"{self.init_note}\n" if self.init_note else "") +
                f"run folder {self.run_dir}")

    def loaders(self, epoch: int):
        train, n_train, val, n_val = epoch_loaders(self.cfg, self.splits, self.ctx, epoch,
                                                   pin=self.spec.device.type == "cuda", decode=self.decode)
        if self.decode == "gpu":  # the loops then see decoded batches
            train, val = DecodedLoader(train, self.spec.decode), DecodedLoader(val, self.spec.decode)
        return train, n_train, val, n_val

    def snapshot(self, weights: dict) -> dict:
        """Checkpoint contents; collective for the tower-parallel layout, so every rank calls it. No RNG
        state: dropout is reseeded every epoch (train_epoch) and the data's randomness is a function of
        (seed, epoch, sample), so a resumed run continues as an uninterrupted one would."""
        return dict(model=weights, momentum=self.model.to_canonical(momentum_buffers(self.model, self.optimizer)),
                    schedule=self.schedule.state_dict(), step=self.step, config=asdict(self.cfg),
                    metrics=self.history, classes=self.splits.classes, mean=list(self.mean),
                    world_size=self.ctx.world_size, num_pairs=self.ctx.num_pairs)

    def train_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        train_loader, n_train, val_loader, n_val = self.loaders(epoch)
        lr = get_lr(self.optimizer)
        # Dropout masks: per rank (each tower its own) and per epoch, so resuming needs no saved RNG state.
        torch.manual_seed(self.ctx.rank_seed(cfg.seed, epoch))
        if self.step_log is not None:
            self.step_log.begin(epoch, cfg.epochs, n_train)
        try:
            stats = train_one_epoch(self.model, self.optimizer, train_loader, self.spec, corrupt=self.corrupt,
                                    total_images=n_train, desc=f"epoch {epoch}/{cfg.epochs}", ctx=self.ctx,
                                    first_step=self.step, max_steps=cfg.max_steps, show=self.show, log=self.step_log)
        except NonFiniteLoss as e:
            if not self.ctx.is_main:
                raise world.Stopped(str(e)) from None  # every rank stops; rank 0 says why
            kept = self.last_checkpoint or "none (no epoch finished yet)"
            raise TrainError(f"{e} Last good checkpoint: {kept}.") from None
        if stats.images == 0:
            raise self.nothing_read("train", len(self.splits.train))
        self.step += stats.steps
        val = evaluate(self.model, val_loader, self.spec, corrupt=self.corrupt, num_classes=self.num_classes,
                       ctx=self.ctx, total_images=n_val, desc="val", show=self.show)
        if val["images"] == 0:  # an error over no images would read 0 % and mark the epoch best
            raise self.nothing_read("val", val["skipped"])
        workers = max(1, cfg.workers)
        row = dict(epoch=epoch, train_loss=stats.loss, val_loss=val["loss"], val_top1_error=val["top1_error"],
                   val_top5_error=val["top5_error"], lr=lr, images_per_s=stats.images / max(stats.seconds, 1e-9),
                   seconds=stats.seconds, loader_images_per_s=stats.images * workers / max(stats.decode_seconds, 1e-9),
                   step_images_per_s=stats.images / max(stats.step_seconds, 1e-9), steps=self.step,
                   corrupt_images=len(self.corrupt.paths), val_images=val["images"], val_skipped=val["skipped"])
        set_lr(self.optimizer, self.schedule.step(epoch, val["top1_error"]))
        return row

    def claim_folder(self) -> RunFolderLock:
        """Lock the run folder for this run's life (main rank): a second run on it gets one sentence."""
        lock = claim_run_dir(self.run_dir, self.cfg, self.history, resumed=self.last_checkpoint is not None)
        self.run_dir = lock.path
        return lock

    def nothing_read(self, split: str, count: int) -> Exception:
        """The error for a split of which no image could be read: said once, by the main rank."""
        message = (f"none of the {count} {split} images under {self.root / split} could be read (each was skipped as "
                   f"unreadable, see above): repair or replace them; the last good checkpoint is "
                   f"{self.last_checkpoint or 'none (no epoch finished yet)'}.")
        return TrainError(message) if self.ctx.is_main else world.Stopped(message)

    def open_logs(self) -> None:
        """The batch-job lines (when stdout is no terminal, or --log-every is given) and TensorBoard (main rank)."""
        if self.ctx.is_main and self.cfg.tensorboard:
            from .board import Board
            self.board = Board(self.run_dir, self.step)
        lines = self.show and (self.cfg.log_every is not None or not sys.stdout.isatty())
        self.step_log = StepLog(self.optimizer, self.spec.device, self.cfg.log_every, lines, self.board,
                                self.ctx.num_pairs)

    def fit(self) -> list[dict]:
        lock = self.ctx.on_main(self.claim_folder)  # the other ranks never write the folder
        try:
            return self._fit()
        finally:
            if self.board is not None:
                self.board.close()
            if lock is not None:
                lock.release()

    def _fit(self) -> list[dict]:
        cfg = self.cfg
        self.say(self.banner())
        self.open_logs()
        for epoch in range(self.epoch + 1, cfg.epochs + 1):
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                break
            row = self.train_epoch(epoch)
            weights = self.model.state_dict()  # collective in the tower-parallel layout
            colours = colourfulness(weights["conv1.weight"])
            row.update({f"colour_tower{t}": c for t, c in enumerate(colours)})
            self.history.append(row)
            is_best = row["val_top1_error"] < self.best
            self.best = min(self.best, row["val_top1_error"])
            state = self.snapshot(weights)
            if self.board is not None:  # before the checkpoint: a resume purges what follows it (board.py)
                self.board.epoch(row, self.step, weights["conv1.weight"])
            # Every rank leaves the epoch once its checkpoint is on disk: a rank lost later resumes from it.
            self.last_checkpoint = self.ctx.on_main(lambda: write_epoch(self.run_dir, state, epoch, is_best, cfg.keep, weights))
            self.say(epoch_line(row, cfg.epochs))
        if self.history:
            best = min(self.history, key=lambda r: r["val_top1_error"])
            self.say(f"done: best val top-1 error {best['val_top1_error']:.1f} % (top-5 {best['val_top5_error']:.1f} %) "
                     f"at epoch {best['epoch']}; outputs in {self.run_dir}")
        return self.history


def epoch_line(row: dict, epochs: int) -> str:
    colour = ""
    if "colour_tower0" in row:
        colour = f" | colour t0 {row['colour_tower0']:.2f} t1 {row['colour_tower1']:.2f}"
    skipped = f" (over {row['val_images']} images, {row['val_skipped']} unreadable skipped)" if row.get("val_skipped") else ""
    return (f"epoch {row['epoch']}/{epochs} | train loss {row['train_loss']:.3f} | val loss {row['val_loss']:.3f} | "
            f"top-1 err {row['val_top1_error']:.1f} % | top-5 err {row['val_top5_error']:.1f} %{skipped} | "
            f"lr {row['lr']:.3g} | "
            f"{row['images_per_s']:.1f} img/s (loader {row['loader_images_per_s']:.0f}, step {row['step_images_per_s']:.1f})"
            f"{colour} | {row['seconds']:.0f} s")


def in_world(cfg: Config, ctx: Context | None, work):
    """work(ctx) in this process's world: joined here unless `ctx` is given (then left again), with a lost
    peer turned into world.PeerLost."""
    own = ctx is None
    ctx = ctx or make_context(cfg)
    try:
        with ctx.guard():
            return work(ctx)
    finally:
        if own:
            world.teardown()


def fit(cfg: Config, given: dict | None = None, ctx: Context | None = None, log=print) -> list[dict]:
    """Train as `cfg` says; `given` holds the flags set explicitly (they override a resumed run's config)."""
    return in_world(cfg, ctx, lambda ctx: Run(cfg, ctx, log, given).fit())


def evaluate_checkpoint(path, cfg: Config, log=print) -> dict:
    """Centre-crop and ten-crop errors of a checkpoint on the validation set (the paper's test protocol)."""
    weights = load_weights(path)  # a checkpoint, a run folder or a .safetensors file
    saved = Config(**{k: v for k, v in weights.config.items() if k in {f.name for f in fields(Config)}})
    saved.num_classes, saved.in_channels, saved.crop = weights.num_classes, weights.in_channels, weights.crop
    for k in PLACEMENT:  # chosen afresh, as on resume: the checkpoint's devices may not be on this machine
        setattr(saved, k, getattr(Config(), k))
    for k in EVALUATION:
        if getattr(cfg, k) is not None and (k != "data" or cfg.data):
            setattr(saved, k, getattr(cfg, k))
    saved.mean, saved.resume, saved.init_from = weights.mean, None, None
    state = dict(model=weights.model, path=weights.path, epoch=weights.epoch, classes=weights.classes)
    return in_world(saved, None, lambda ctx: _evaluate(Run(saved, ctx, log), state))


def _evaluate(run: Run, state: dict) -> dict:
    ctx = run.ctx  # every rank evaluates: the forward passes are collective in the tower-parallel layout
    check_classes(run.splits.classes, state, run.root)
    run.model.load_state_dict(state["model"])
    run.say(f"evaluating {state['path']} (epoch {state['epoch']}) in layout {run.layout} on {run.spec.device}: "
            f"{len(run.splits.val)} val images of {run.num_classes} classes in {run.root}")
    results = {}
    for crops in (1, 10):
        run.cfg.val_crops = crops
        _, _, loader, n_val = run.loaders(0)
        results[crops] = evaluate(run.model, loader, run.spec, corrupt=run.corrupt, num_classes=run.num_classes,
                                  ctx=ctx, total_images=n_val, desc=f"val {crops} crop(s)", show=run.show)
        r = results[crops]
        if r["images"] == 0:
            raise run.nothing_read("val", r["skipped"])
        skipped = f" ({r['skipped']} unreadable skipped)" if r["skipped"] else ""
        run.say(f"{state['path']}: {crops:2d} crop(s): top-1 error {r['top1_error']:.2f} %, top-5 error "
                f"{r['top5_error']:.2f} %, loss {r['loss']:.4f} on {r['images']} images{skipped}")
    return results
