"""A run's set-up, one step per function, each returning what it made (trainer.start calls them in order):
the world (`make_context`), everything checked before a model is built (`plan_run`), the model and its
optimiser (`build_training`), and where training starts (`restore`, or `fresh_start`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alexnet2gpu.data.device_input import InputSpec
from alexnet2gpu.data.folders import CorruptLog
from alexnet2gpu.data.gpu.decode import resolve_decode
from alexnet2gpu.distributed import world
from alexnet2gpu.distributed.device import check_device, default_device_type
from alexnet2gpu.distributed.world import Context, Printer
from alexnet2gpu.errors import TrainError
from alexnet2gpu.model.layers import TOWERS, canonical_shapes
from alexnet2gpu.model.layouts import build_model, resolve_layout as resolve_process_layout
from alexnet2gpu.model.stack import StackOptions
from alexnet2gpu.weights.io import Weights, initial_weights, load_weights

from .checks import check_config, same_folder
from .config import Config, resume_config
from .cuda_graphs import GRAPH_OPTIONS, GraphedStep, check_graphable
from .loaders import RunData, open_data
from .optim import load_momentum_buffers, make_optimizer, make_schedule, set_lr
from .resume import find_resume, resume_changes, resume_lr
from .run_folder import new_run_dir, run_folder_of

PAPER_BATCH = 128  # the batch the paper's lr 0.01 goes with (linear scaling reference)


def make_context(cfg: Config) -> Context:
    """The process's place in the world: under torchrun one tower of one tower pair (world.setup), otherwise
    a single process. Setup mistakes (odd world size, a device naming one GPU) are the same on every rank,
    so rank 0 reports them and the others stop quietly."""
    device = cfg.device if cfg.device != "auto" else default_device_type()
    try:
        return world.setup(device=device, timeout_s=cfg.dist_timeout, towers=TOWERS)
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


@dataclass
class Plan:
    """Everything checked before a model is built."""

    cfg: Config
    state: dict | None  # the checkpoint resumed from
    data: RunData
    layout: str
    device: torch.device
    decode: str  # where JPEGs are decoded: cpu or gpu
    start_weights: Weights | None = None  # --init-from
    init_note: str = ""  # what --init-from took, for the banner
    given: dict = field(default_factory=dict)  # the flags set explicitly (advice repeats them)
    resume_dir: Path | None = None  # the run folder of the checkpoint resumed from; None outside any
    changes: list = field(default_factory=list)  # (setting, was, now) of the flags a resume honoured


def plan_run(cfg: Config, given: dict, ctx: Context, say: Printer, scored: dict | None = None) -> Plan:
    """Config, data and placement, checked. `given`: the flags set explicitly (a resumed run takes those it
    may change); `scored`: the checkpoint --evaluate scores. Run on the main rank first (Context.main_first):
    it makes the built-in set and caches the mean, which the others then find, and a mistake is said once."""
    if cfg.resume is not None and cfg.init_from is not None:
        raise TrainError("--resume continues a run and --init-from starts a new one from another run's weights: "
                         "pass one of them.")
    state = find_resume(cfg, say)
    resume_dir, changes = None, []
    if state:  # before anything is read: a flag a resume refuses is said at once
        resume_dir = run_folder_of(state["path"])
        changes = resume_changes(state, given, resume_dir)
    cfg = resume_config(state["config"], given) if state else cfg
    moved = state is not None and "data" in given and not same_folder(given["data"], state["config"].get("data"))
    if state:
        cfg.data = given["data"] if moved else cfg.data
        cfg.mean = state.get("mean") or cfg.mean  # the input the weights were trained on, wherever the data is
    check_config(cfg)
    start_weights = load_weights(cfg.init_from) if cfg.init_from is not None and not state else None
    # Each pair reads its own shard: the first rank of each pair names the unreadable images it meets.
    corrupt = CorruptLog(cfg.max_corrupt, Printer(ctx.tower in (None, 0)))
    # Fine-tuning keeps the mean the weights were trained with (the network learned on inputs less that mean),
    # so nothing is computed, nor written into the data folder.
    data = open_data(cfg, corrupt, say, resumed=state is not None, trained=state or scored,
                     mean=start_weights.mean if start_weights else None)
    if state:
        if moved:
            say(f"note: the data moved: {state['config'].get('data') or 'the built-in set'} -> {data.root}, "
                f"with the same {data.num_classes} classes as the checkpoint")
    layout = resolve_layout(cfg.layout, ctx, cfg.devices)
    device = resolve_device(cfg.device, ctx)
    if cfg.amp not in (None, "bf16"):
        raise TrainError(f"--amp {cfg.amp!r}: the only mixed precision offered is bf16.")
    if cfg.amp and device.type != "cuda":
        raise TrainError("--amp bf16 needs a CUDA device and this run is on the CPU: leave --amp out.")
    if cfg.cuda_graphs:
        try:
            check_graphable(layout, [device])  # the two-device towers' devices are checked once they are built
        except ValueError as error:
            raise TrainError(str(error)) from None
    plan = Plan(cfg, state, data, layout, device, resolve_decode(cfg.decode, device, data.root), given=given,
                resume_dir=resume_dir, changes=changes)
    if start_weights is not None:  # checked here, before any model is built
        plan.start_weights = start_weights
        shapes = canonical_shapes(data.num_classes, cfg.in_channels)
        plan.init_note = initial_weights({k: torch.empty(v, device="meta") for k, v in shapes.items()},
                                         start_weights)[1] + "\n" + mean_note(cfg, start_weights, data)
    return plan


def mean_note(cfg: Config, weights: Weights, data: RunData) -> str:
    """Which mean a fine-tuning run subtracts, and where it came from, for the banner."""
    mean = [round(m, 2) for m in data.mean]
    if cfg.mean:
        theirs = f"; the weights were trained with {[round(m, 2) for m in weights.mean]}" if weights.mean else ""
        return f"input mean {mean} from --mean{theirs}"
    if weights.mean:
        return f"input mean {mean} from the weights, the one they were trained with (--mean R,G,B overrides it)"
    return f"input mean {mean} computed from the training images of {data.root}: the weights carry none"


@dataclass
class Training:
    """The model and what trains it."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: object  # optim.make_schedule's
    spec: InputSpec
    lr_rule: str  # how the lr was found, for the banner
    graphed: GraphedStep | None = None  # --cuda-graphs


def build_training(plan: Plan, ctx: Context) -> Training:
    cfg = plan.cfg
    world.seed_all(cfg.seed)  # the same seed on every rank: the same initial weights in every layout
    model = build_model(plan.layout, plan.data.num_classes, cfg.in_channels, cfg.init, cfg.dropout,
                        device=plan.device, devices=cfg.devices, ctx=ctx,
                        options=GRAPH_OPTIONS if cfg.cuda_graphs else StackOptions())
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if plan.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN times its algorithms once and keeps the best
    if cfg.compile:
        model.compile()  # in place: the module (its state_dict, its layout methods) stays the same object
    lr, lr_rule = effective_lr(cfg, ctx)
    optimizer = make_optimizer(model, lr, cfg.momentum, cfg.weight_decay, cfg.bias_decay)
    schedule = make_schedule(cfg.schedule, lr, cfg.patience, cfg.lr_steps)
    first = next(model.parameters()).device  # the layout protocol: input and logits on the first device
    spec = InputSpec(first, torch.tensor(plan.data.mean, dtype=torch.float32), cfg.pca, cfg.channels_last, cfg.amp)
    graphed = None
    if cfg.cuda_graphs:
        graphed = GraphedStep(model, plan.layout, batch_size=cfg.batch_size)
    return Training(model, optimizer, schedule, spec, lr_rule, graphed)


@dataclass
class Start:
    """Where training starts: epochs done, steps done, their metrics, the run folder."""

    run_dir: Path
    history: list[dict] = field(default_factory=list)
    epoch: int = 0
    step: int = 0
    best: float = float("inf")  # lowest val top-1 error so far
    last_checkpoint: str | None = None  # the newest checkpoint on disk, named when a run stops
    new: bool = True  # a folder this run starts (run_folder.claim_run_dir)
    folder_note: str = ""  # why a resumed run has a new folder, for the banner


def fresh_start(plan: Plan, training: Training) -> Start:
    """A new run: the weights --init-from names, if any, in a new run folder."""
    if plan.start_weights is not None:  # collective in the tower-parallel layout, like every load
        model = training.model
        model.load_state_dict(initial_weights(model.state_dict(), plan.start_weights)[0])
    begin = Start(new_run_dir(plan.cfg))
    if plan.cfg.resume == "auto":  # torchrun restarts rely on it starting; the banner says it plainly
        begin.folder_note = f"a new run, since --resume auto found nothing to resume in {plan.cfg.out}"
    return begin


def restore(plan: Plan, training: Training, ctx: Context, say: Printer) -> Start:
    """A resumed run: weights, momentum and schedule from the checkpoint, which any layout and world size
    can load. It goes on in the checkpoint's run folder, or in a new one for a checkpoint outside any."""
    state, cfg = plan.state, plan.cfg
    model, optimizer, schedule = training.model, training.optimizer, training.schedule
    model.load_state_dict(state["model"])
    schedule.load_state_dict(state["schedule"])
    lr_changed = any(name in ("lr", "lr_scaling") for name, *_ in plan.changes)
    training.lr_rule = resume_lr(schedule, state, effective_lr(cfg, ctx)[0], lr_changed, cfg, ctx)
    set_lr(optimizer, schedule.lr)  # no buffers yet: only sets lr
    load_momentum_buffers(model, optimizer, model.from_canonical(state["momentum"]))
    pairs = state.get("num_pairs", 1)
    if pairs != ctx.num_pairs:
        say(f"note: this checkpoint was written by {pairs} tower pair(s), now {ctx.num_pairs}: the "
            f"effective batch becomes {cfg.batch_size * ctx.num_pairs}"
            + ("" if lr_changed else f" and the lr continues from the checkpoint ({schedule.lr:g})"))
    history = list(state["metrics"])
    best = min((r["val_top1_error"] for r in history), default=float("inf"))
    begin = Start(plan.resume_dir, history, state["epoch"], state["step"], best, state["path"], new=False)
    if plan.resume_dir is None:
        begin.run_dir, begin.new = new_run_dir(cfg), True
        begin.folder_note = (f"a new one, since {state['path']} is not in a run folder (RUN/checkpoints/ beside "
                             "train.py's config.json): nothing is written beside it")
    return begin
