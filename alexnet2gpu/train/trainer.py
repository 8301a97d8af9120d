"""A whole training run: set up (`start`), epochs, checkpoints, reports; `fit` and `evaluate_checkpoint`.

train.py turns the command line into a `Config` and calls `fit` (or `evaluate_checkpoint`). Under torchrun
every rank runs everything here (`make_context` joins the world); only the main rank prints (`Context.say`)
and writes files. Collective calls (model.state_dict, model.to_canonical, evaluation) are made on every rank.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, fields

import torch

from alexnet2gpu.data.gpu.decode import resolve_cpu_share
from alexnet2gpu.data.gpu.loader import DecodedLoader, decode_thread_note
from alexnet2gpu.distributed import world
from alexnet2gpu.distributed.world import Context, Printer
from alexnet2gpu.errors import TrainError
from alexnet2gpu.weights.io import load_weights

from .advice import command_line, resume_command
from .batch_log import StepLog
from .checks import flag
from .config import EVALUATION, PLACEMENT, Config
from .engine import NonFiniteLoss, evaluate, has_top5, train_one_epoch
from .loaders import Loaders, run_loaders
from .optim import get_lr, momentum_buffers, set_lr
from .report import colourfulness
from .resume import changes_note, shown
from .run_folder import claim_run_dir, run_record, write_epoch
from .run_log import attach, capture, file_writer
from .setup import Plan, Start, Training, build_training, fresh_start, make_context, plan_run, restore


class Run:
    """Everything one run holds, as `start` made it; advanced by `fit`."""

    def __init__(self, plan: Plan, training: Training, begin: Start, ctx: Context, say: Printer):
        self.ctx, self.say = ctx, say
        self.cfg, self.data, self.layout, self.decode, self.init_note = (plan.cfg, plan.data, plan.layout,
                                                                         plan.decode, plan.init_note)
        self.model, self.optimizer, self.schedule = training.model, training.optimizer, training.schedule
        self.spec, self.lr_rule, self.graphed = training.spec, training.lr_rule, training.graphed
        self.run_dir, self.history, self.epoch, self.step = begin.run_dir, begin.history, begin.epoch, begin.step
        self.best, self.last_checkpoint = begin.best, begin.last_checkpoint
        self.given, self.new_folder, self.folder_note = plan.given, begin.new, begin.folder_note
        self.changes = plan.changes  # the flags a resume honoured, for the banner
        # --max-steps counts this invocation's steps: the absolute step it stops at
        self.stop_at = None if self.cfg.max_steps is None else begin.step + self.cfg.max_steps
        self.step_log: StepLog | None = None  # batch-job lines and TensorBoard scalars (open_logs)
        self.board = None  # board.Board with --tensorboard, on the main rank
        self._loaders: Loaders | None = None  # built at the first epoch, kept to the end (`loaders`)
        share = resolve_cpu_share(self.cfg.cpu_decode_share, self.cfg.workers) if self.decode == "gpu" else None
        # what ran, beside the settings: in config.json and in every checkpoint (run_folder.run_record)
        self.record = run_record(self.layout, getattr(self.model, "devices", None) or [self.spec.device], ctx,
                                 self.data, self.cfg.data is None, self.decode, share)

    def banner(self) -> str:
        cfg, data = self.cfg, self.data
        where = f"{data.root} (built-in synthetic set)" if cfg.data is None else str(data.root)
        few = "" if has_top5(data.num_classes) else " (too few for a top-5 error, which is left out)"
        return (f"config:\n{cfg.describe()}\n"
                f"data {where}: {data.num_classes} classes{few}, {len(data.splits.train)} train / "
                f"{len(data.splits.val)} val images; mean {[round(m, 2) for m in data.mean]}\n"
                f"layout {self.layout} on {self.spec.device}"
                f"{' (forward and backward replayed from a CUDA graph)' if self.graphed else ''}; "
                f"processes: {self.ctx.describe()}; JPEG decode: "
                f"{self.decode}{self.gpu_decode_note()}\n"
                f"{self.lr_rule}; schedule {cfg.schedule}\n"
                + (f"{changes_note(self.changes)}\n" if self.changes else "")
                + (f"{self.init_note}\n" if self.init_note else "") +
                f"run folder {self.run_dir}" + (f": {self.folder_note}" if self.folder_note else ""))

    def gpu_decode_note(self) -> str:
        if self.decode != "gpu":
            return ""
        share = self.record["cpu_decode_share"]
        return (f" with nvJPEG ({share:.0%} of the images decoded by the loader workers, "
                f"--cpu-decode-share {self.cfg.cpu_decode_share})")

    def loaders(self, epoch: int) -> Loaders:
        """This rank's loaders, moved to `epoch`. Built at the first call and kept: their worker processes
        start once per run, not once per epoch, and live until `close_loaders`."""
        if self._loaders is None:
            loaders = run_loaders(self.cfg, self.data.splits, self.ctx, pin=self.spec.device.type == "cuda",
                                  decode=self.decode, persistent=True)
            if self.decode == "gpu":  # the loops then see decoded batches
                loaders.train, loaders.val = (DecodedLoader(loader, self.spec.decode, self.spec.device,
                                                            files=self.spec.decode_files)
                                              for loader in (loaders.train, loaders.val))
            self._loaders = loaders
        return self._loaders.for_epoch(epoch)

    def close_loaders(self) -> None:
        """Stop the loaders' worker processes: at the end of a run, whatever ended it."""
        if self._loaders is not None:
            self._loaders.close()
            self._loaders = None

    def snapshot(self, weights: dict) -> dict:
        """Checkpoint contents; collective for the tower-parallel layout, so every rank calls it. No RNG
        state: dropout is reseeded every epoch (train_epoch) and the data's randomness is a function of
        (seed, epoch, sample), so a resumed run continues as an uninterrupted one would."""
        return dict(model=weights, momentum=self.model.to_canonical(momentum_buffers(self.model, self.optimizer)),
                    schedule=self.schedule.state_dict(), step=self.step, config=asdict(self.cfg),
                    metrics=self.history, classes=self.data.splits.classes, mean=list(self.data.mean),
                    world_size=self.ctx.world_size, num_pairs=self.ctx.num_pairs, resolved=self.record)

    def train_epoch(self, epoch: int) -> dict:
        cfg, corrupt = self.cfg, self.data.corrupt
        loaders = self.loaders(epoch)
        train_loader, n_train = loaders.train, loaders.n_train
        decoding = isinstance(train_loader, DecodedLoader)  # the GPU data path
        clocks_before = train_loader.clocks() if decoding else None  # its clocks add up over the epochs
        lr = get_lr(self.optimizer)
        # Dropout masks: per rank (each tower its own) and per epoch, so resuming needs no saved RNG state.
        torch.manual_seed(self.ctx.rank_seed(cfg.seed, epoch))
        if self.step_log is not None:
            self.step_log.begin(epoch, cfg.epochs, n_train)
        try:
            stats = train_one_epoch(self.model, self.optimizer, train_loader, self.spec, corrupt=corrupt,
                                    total_images=n_train, desc=f"epoch {epoch}/{cfg.epochs}", ctx=self.ctx,
                                    first_step=self.step, max_steps=self.stop_at, show=self.say.on,
                                    log=self.step_log, graphed=self.graphed, batch_size=cfg.batch_size)
        except NonFiniteLoss as e:
            if not self.ctx.is_main:
                raise world.Stopped(str(e)) from None  # every rank stops; rank 0 says why
            raise TrainError(f"{e}; {self.lower_lr_advice()}") from None
        if stats.images == 0:
            raise self.nothing_read("train", len(self.data.splits.train))
        if decoding:  # which side of the GPU data path the epoch waited for
            clock, crop_clock = (now.since(before) for now, before in zip(train_loader.clocks(), clocks_before))
            self.say(f"epoch {epoch}: {decode_thread_note(clock, stats.images, stats.seconds, crop_clock)}")
        self.step += stats.steps
        val = evaluate(self.model, loaders.val, self.spec, corrupt=corrupt, num_classes=self.data.num_classes,
                       ctx=self.ctx, total_images=loaders.n_val, desc="val", show=self.say.on)
        if val["images"] == 0:  # an error over no images would read 0 % and mark the epoch best
            raise self.nothing_read("val", val["skipped"])
        workers = max(1, cfg.workers)
        row = dict(epoch=epoch, train_loss=stats.loss, val_loss=val["loss"], val_top1_error=val["top1_error"],
                   lr=lr, images_per_s=stats.images / max(stats.seconds, 1e-9),
                   seconds=stats.seconds, loader_images_per_s=stats.images * workers / max(stats.decode_seconds, 1e-9),
                   step_images_per_s=stats.images / max(stats.step_seconds, 1e-9), steps=self.step,
                   corrupt_images=len(corrupt.paths), val_images=val["images"], val_skipped=val["skipped"])
        if val["top5_error"] is not None:  # 5 classes or fewer: no top-5 (an empty cell in metrics.csv)
            row["val_top5_error"] = val["top5_error"]
        set_lr(self.optimizer, self.schedule.step(epoch, val["top1_error"]))
        return row

    def lower_lr_advice(self) -> str:
        """After a non-finite loss: the command that goes on at a tenth of the lr. A resume honours --lr (its
        base lr, which the schedule's drops so far divide), so the same step is not met again at the same lr."""
        lower = f"{self.cfg.lr / 10:g}"
        if self.last_checkpoint is None:
            again = command_line({**self.given, "lr": lower}, self.ctx.distributed)
            return f"no epoch had finished, so there is no checkpoint: start again at a lower lr with: {again}"
        return (f"the last good checkpoint, {self.last_checkpoint}, is kept: continue from it at a lower lr with: "
                f"{self.resume_command(lr=lower)}")

    def nothing_read(self, split: str, count: int) -> Exception:
        """The error for a split of which no image could be read: said once, by the main rank."""
        message = (f"none of the {count} {split} images under {self.data.root / split} could be read (each was "
                   f"skipped as unreadable, see above): repair or replace them; the last good checkpoint is "
                   f"{self.last_checkpoint or 'none (no epoch finished yet)'}.")
        return TrainError(message) if self.ctx.is_main else world.Stopped(message)

    def open_logs(self) -> None:
        """The batch-job lines (when stdout is no terminal, or --log-every is given) and TensorBoard (main rank)."""
        if self.ctx.is_main and self.cfg.tensorboard:
            from .board import Board
            self.board = Board(self.run_dir, self.step)
        lines = self.say.on and (self.cfg.log_every is not None or not sys.stdout.isatty())
        self.step_log = StepLog(self.optimizer, self.spec.device, self.cfg.log_every, lines, self.board,
                                self.ctx.num_pairs, file=file_writer())  # RUN/train.log gets the lines anyway

    def fit(self) -> list[dict]:
        # The main rank claims the run folder for the run's life; the other ranks never write it.
        lock = self.ctx.on_main(
            lambda: claim_run_dir(self.run_dir, self.cfg, self.history, self.new_folder, self.record))
        if lock is not None:
            self.run_dir = lock.path  # numbered past a folder another run took meanwhile
        try:
            if lock is not None:  # RUN/train.log from here on, with the lines printed so far
                attach(self.run_dir, resumed=bool(self.history))
            return self._fit()
        finally:
            self.close_loaders()  # an error too: workers left to the garbage collector could outlive it
            if self.board is not None:
                self.board.close()
            if lock is not None:
                lock.release()

    def _fit(self) -> list[dict]:
        cfg = self.cfg
        self.say(self.banner())
        self.open_logs()
        done_before = len(self.history)
        for epoch in range(self.epoch + 1, cfg.epochs + 1):
            if self.stop_at is not None and self.step >= self.stop_at:
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
            self.last_checkpoint = self.ctx.on_main(
                lambda: write_epoch(self.run_dir, state, epoch, is_best, cfg.keep, weights))
            self.say(epoch_line(row, cfg.epochs))
        self.say(self.ending(trained=len(self.history) - done_before))
        return self.history

    def ending(self, trained: int) -> str:
        """The last line: done, stopped by --max-steps (and how to go on), or nothing left to train."""
        cfg, done = self.cfg, self.history[-1]["epoch"] if self.history else 0
        if not trained:
            return (f"nothing to train: {self.run_dir} has done {done} epoch(s) and --epochs is {cfg.epochs}; pass a "
                    "larger --epochs to train on.")
        if done < cfg.epochs:
            return (f"stopped by --max-steps {cfg.max_steps} at step {self.step}, after epoch {done} of {cfg.epochs} "
                    f"(checkpointed); continue with: {self.resume_command()}")
        best = min(self.history, key=lambda r: r["val_top1_error"])
        top5 = f" (top-5 {best['val_top5_error']:.1f} %)" if has_top5(self.data.num_classes) else ""
        return (f"done: best val top-1 error {best['val_top1_error']:.1f} %{top5} at epoch {best['epoch']}; outputs "
                f"in {self.run_dir}")

    def resume_command(self, **changes) -> str | None:
        """The command that continues this run from its last checkpoint (None before the first). Only the main
        rank writes checkpoints and knows their paths: the other ranks name --resume auto in the run's --out."""
        checkpoint = self.last_checkpoint if self.ctx.is_main else "auto" if self.history else None
        if checkpoint is None:
            return None
        return resume_command(checkpoint, self.run_dir.parent, self.given, self.ctx.distributed, **changes)


def start(cfg: Config, ctx: Context, given: dict | None = None, scored: dict | None = None) -> Run:
    """A run set up step by step (setup.py); `given` holds the flags set explicitly; `scored`: the checkpoint
    --evaluate scores."""
    say = ctx.say
    # The main rank goes first: it generates the built-in set and caches the mean, which the others then
    # find; a mistake (a bad flag, a missing folder) is reported once, by the main rank.
    plan = ctx.main_first(lambda: plan_run(cfg, given or {}, ctx, say, scored))
    training = build_training(plan, ctx)
    begin = restore(plan, training, ctx, say) if plan.state else fresh_start(plan, training)
    return Run(plan, training, begin, ctx, say)


def epoch_line(row: dict, epochs: int) -> str:
    """The epoch's line, its fields in words (docs/training.md explains each). Colourfulness follows the paper's
    Figure 3 (§6.1): one tower's conv1 kernels came out largely colour-agnostic, the other's colour-specific."""
    colour = ""
    if "colour_tower0" in row:
        colour = f" | conv1 colourfulness: tower 0 {row['colour_tower0']:.2f}, tower 1 {row['colour_tower1']:.2f}"
    top5 = f", top-5 {row['val_top5_error']:.1f} %" if row.get("val_top5_error") is not None else ""
    skipped = f" (over {row['val_images']} images, {row['val_skipped']} unreadable skipped)" if row.get("val_skipped") else ""
    return (f"epoch {row['epoch']}/{epochs} | train loss {row['train_loss']:.3f} | val loss {row['val_loss']:.3f} | "
            f"val error top-1 {row['val_top1_error']:.1f} %{top5}{skipped} | lr {row['lr']:.3g} | "
            f"{row['images_per_s']:.1f} img/s (loader up to {row['loader_images_per_s']:.0f} img/s, model step up to "
            f"{row['step_images_per_s']:.1f} img/s){colour} | {row['seconds']:.0f} s")


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


def fit(cfg: Config, given: dict | None = None, ctx: Context | None = None, started=None) -> list[dict]:
    """Train as `cfg` says; `given` holds the flags set explicitly (they override a resumed run's config);
    `started(run)` is called once the run is set up (train.py names its folder when it is interrupted)."""
    def work(ctx):
        run = start(cfg, ctx, given)
        if started is not None:
            started(run)
        return run.fit()

    with capture():  # RUN/train.log (run_log.py); train.py's own capture when it calls this
        return in_world(cfg, ctx, work)


def check_evaluation_flags(weights, given: dict) -> None:
    """--evaluate scores the checkpoint as it was trained: a flag that would change that is refused by name,
    never ignored (--num-classes cannot make a 2-class network score 3 classes)."""
    trained = dict(num_classes=weights.num_classes, in_channels=weights.in_channels, crop=weights.crop,
                   mean=weights.mean)
    for name, value in given.items():
        was = trained[name] if name in trained else weights.config.get(name)
        if name not in EVALUATION and value != was:
            takes = ", ".join(flag(k) for k in EVALUATION)
            raise TrainError(f"{flag(name)} {shown(value)} cannot change what --evaluate scores (the checkpoint's is "
                             f"{shown(was)}): leave it out; --evaluate takes {takes}.")


def evaluate_checkpoint(path, cfg: Config, given: dict | None = None) -> dict:
    """Centre-crop and ten-crop errors of a checkpoint on the validation set (the paper's test protocol)."""
    weights = load_weights(path)  # a checkpoint, a run folder or a .safetensors file
    check_evaluation_flags(weights, given or {})
    saved = Config(**{k: v for k, v in weights.config.items() if k in {f.name for f in fields(Config)}})
    saved.num_classes, saved.in_channels, saved.crop = weights.num_classes, weights.in_channels, weights.crop
    for k in PLACEMENT:  # chosen afresh, as on resume: the checkpoint's devices may not be on this machine
        setattr(saved, k, getattr(Config(), k))
    for k in EVALUATION:
        if getattr(cfg, k) is not None and (k != "data" or cfg.data):
            setattr(saved, k, getattr(cfg, k))
    saved.mean, saved.resume, saved.init_from = weights.mean, None, None
    state = dict(model=weights.model, path=weights.path, epoch=weights.epoch, classes=weights.classes,
                 num_classes=weights.num_classes)
    return in_world(saved, None, lambda ctx: _evaluate(start(saved, ctx, scored=state), state))


def _evaluate(run: Run, state: dict) -> dict:
    ctx, data = run.ctx, run.data  # every rank evaluates: collective in the tower-parallel layout
    run.model.load_state_dict(state["model"])  # the data's classes are the checkpoint's (loaders.open_data)
    run.say(f"evaluating {state['path']} (epoch {state['epoch']}) in layout {run.layout} on {run.spec.device}: "
            f"{len(data.splits.val)} val images of {data.num_classes} classes in {data.root}")
    results = {}
    for crops in (1, 10):
        run.cfg.val_crops = crops  # the val loader's mode and batch follow it: built (and closed) for each
        try:
            loaders = run.loaders(0)
            results[crops] = evaluate(run.model, loaders.val, run.spec, corrupt=data.corrupt,
                                      num_classes=data.num_classes, ctx=ctx, total_images=loaders.n_val,
                                      desc=f"val {crops} crop(s)", show=run.say.on)
        finally:
            run.close_loaders()
        r = results[crops]
        if r["images"] == 0:
            raise run.nothing_read("val", r["skipped"])
        skipped = f" ({r['skipped']} unreadable skipped)" if r["skipped"] else ""
        top5 = f", top-5 error {r['top5_error']:.2f} %" if r["top5_error"] is not None else ""
        run.say(f"{state['path']}: {crops:2d} crop(s): top-1 error {r['top1_error']:.2f} %{top5}, loss "
                f"{r['loss']:.4f} on {r['images']} images{skipped}")
    return results
