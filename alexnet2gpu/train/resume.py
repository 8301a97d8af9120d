"""What a resumed run takes from its checkpoint and what from the command line. The settings table
(config.py) says which settings a resume may change: a flag given on resume is honoured and named in the
banner, or refused in one sentence naming it and why; none is dropped silently. A flag that repeats the
checkpoint's value changes nothing, so a restarted command line (torchrun --max-restarts with --resume auto)
resumes as it is."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from alexnet2gpu.distributed.world import Context, Printer
from alexnet2gpu.errors import TrainError
from alexnet2gpu.weights import checkpoint as ckpt

from .checks import flag
from .config import AFRESH, RESUMABLE, Config

# Checked where they are used (setup.plan_run): --data may move, --run-name names only a new folder.
CHECKED_ELSEWHERE = ("data", "resume", "init_from", "run_name")
FIXED = {f.name: f.metadata["fixed"] for f in fields(Config)}


def find_resume(cfg: Config, say: Printer) -> dict | None:
    """The checkpoint --resume names (auto: the newest under --out), loaded; None for a new run."""
    if cfg.resume is None:
        return None
    path = ckpt.latest_checkpoint(cfg.out) if cfg.resume == "auto" else Path(cfg.resume)
    if path is None:
        say(f"--resume auto: nothing to resume in {cfg.out}: starting a new run (no run folder there holds a "
            "checkpoint)")
        return None
    state = ckpt.load_checkpoint(path)
    say(f"resuming from {state['path']} (epoch {state['epoch']} done)")
    return state


def shown(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def saved_value(name: str, state: dict):
    """What the checkpoint's run had for setting `name`: its classes and mean as trained, else its config."""
    if name == "num_classes" and state.get("classes"):
        return len(state["classes"])
    if name == "mean" and state.get("mean"):
        return list(state["mean"])
    return state["config"].get(name, getattr(Config(), name))


def resume_changes(state: dict, given: dict, resume_dir: Path | None) -> list[tuple[str, object, object]]:
    """The given flags that change the checkpoint's run, as (setting, was, now): each one a resume may change,
    for the banner. Any other is refused in one sentence naming it."""
    changes = []
    for name, value in given.items():
        if name in CHECKED_ELSEWHERE or name in AFRESH:
            continue
        was = saved_value(name, state)
        if value == was:
            continue
        if name not in RESUMABLE:
            why = FIXED[name].replace("CKPT", state["path"]) or "a resumed run keeps the checkpoint's; leave it out"
            raise TrainError(f"{flag(name)} {shown(value)} cannot change on resume (the checkpoint's run has "
                             f"{shown(was)}): {why}.")
        changes.append((name, was, value))
    name = given.get("run_name")
    if resume_dir is not None and name is not None and name != resume_dir.name:
        raise TrainError(f"--run-name {name} cannot change on resume: the run goes on in its folder {resume_dir}; "
                         "leave --run-name out (it names the new folder only of a checkpoint outside any run folder).")
    return changes


def changes_note(changes: list[tuple[str, object, object]]) -> str:
    return "resumed with: " + ", ".join(f"{flag(k)} {shown(now)} (the checkpoint's run: {shown(was)})"
                                        for k, was, now in changes)


def resume_lr(schedule, state: dict, base: float, changed: bool, cfg: Config, ctx: Context) -> str:
    """Set the schedule of a resumed run and say its lr, for the banner. `base`: the base lr the settings give
    (linear scaling applied); it replaces the checkpoint's when --lr or --lr-scaling changed on resume. The
    schedule's drops so far divide it either way."""
    epoch, was = state["epoch"], schedule.lr
    schedule.rebase(base if changed else schedule.base(epoch), epoch)
    drops = schedule.dropped(epoch)
    batch = cfg.batch_size * ctx.num_pairs
    after = f", after the schedule's {drops} drop(s) so far" if drops else ""
    head = f"effective batch {batch} ({cfg.batch_size} per tower pair x {ctx.num_pairs}); lr {schedule.lr:g}"
    if not changed:
        return f"{head} continues from the checkpoint (base {schedule.base(epoch):g}{after}; --lr sets another base)"
    scaled = f" x {batch}/128 (linear scaling)" if cfg.lr_scaling == "linear" else ""
    return f"{head} from --lr {cfg.lr:g}{scaled} given on resume{after} (the checkpoint's lr was {was:g})"
