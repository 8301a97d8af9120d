"""Every setting of a training run, stated once: its default (the paper's recipe, docs/paper.md §4-5), the
demo's value where the built-in set needs another, its help, and whether a resumed run or an evaluation
may change it. train.py's flags and their help are generated from this table. The table is plain data: it
imports nothing of the package or of torch."""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _strs(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _auto_or_number(text: str):
    """A number where the text is one, else the text ("auto", or a mistake the run's checks name)."""
    try:
        return float(text)
    except ValueError:
        return text.strip()


# train.py --help shows the settings in these groups, in this order (setting(group=...)).
GROUPS = {
    "data": "data (the images and how they are read)",
    "recipe": "the recipe (the paper's hyper-parameters, §5, and augmentation, §4)",
    "run": "run folder, resume, evaluation and logs",
    "speed": "speed (GPU tuning, all off in the paper's recipe: docs/gpu.md)",
    "torchrun": "devices and torchrun (where the towers run)",
}


def setting(default, help: str, *, group: str, demo=MISSING, parse=None, choices=None, aliases: tuple = (),
            hidden: tuple = (), metavar: str | None = None, bare=MISSING, refused: dict | None = None,
            shown: str | None = None, resume: bool = False, evaluate: bool = False, placement: bool = False,
            afresh: bool = False, fixed: str = ""):
    """One setting. `group`: its group in train.py --help (GROUPS); `demo`: its value without --data (the built-in
    set); `parse`: how its flag's text is read (default: the type of `default`); `aliases`: other names of its flag,
    shown beside it (torchvision's and timm's where they mean the same here); `hidden`: old names still accepted,
    not shown; `metavar`: its value's name in the help; `bare`: the value of the flag given without one; `refused`:
    {value: why it is not offered}; `shown`: the default as the help says it, where the value itself does not say it
    ("": none, as for a setting only the demo uses); `resume`: a resumed run may change it; `evaluate`: --evaluate
    may change it; `placement`: where the run computes, chosen afresh on resume; `afresh`: each invocation's own, as
    given or its default, never the checkpoint's (placement is afresh too); `fixed`: why a resume refuses another
    value, and what to do instead (CKPT stands for the checkpoint)."""
    if group not in GROUPS:
        raise ValueError(f"setting group {group!r} is not one of {', '.join(GROUPS)}")
    meta = dict(help=help, group=group, demo=demo, parse=parse, choices=choices, aliases=aliases, hidden=hidden,
                metavar=metavar, bare=bare, refused=refused or {}, shown=shown, resume=resume, evaluate=evaluate,
                placement=placement, afresh=afresh or placement, fixed=fixed)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# Why a resume refuses a new value of these (setting(fixed=...)): the same reason for each group.
_SCHEDULE = ("the lr schedule goes on from the checkpoint's state (its drops so far, its best error); leave it out, "
             "or start a new run from its weights with --init-from CKPT")
_MEAN = "a resumed run keeps the mean its weights were trained on; leave it out"
_BUILT_IN = "it sizes the built-in set the run trains on; leave it out, or start a new run"
_FP16 = ("it needs a loss scaler that skips the steps whose gradients overflow, and this loop stops at the first "
         "non-finite value instead: use --amp (bf16: as fast as fp16 on Ampere and newer GPUs, with fp32's range)")


@dataclass
class Config:
    data: str | None = setting(None, "folder with train/ and val/ of class folders (ILSVRC-2012 layout)",
                               group="data", aliases=("--data-path",), metavar="DIR",
                               shown="the built-in synthetic set", evaluate=True)
    epochs: int = setting(90, "passes over the training set", demo=11, resume=True, group="recipe")
    batch_size: int = setting(128, "images per step and tower pair; the effective batch is this x the pairs",
                              demo=32, evaluate=True, resume=True, group="recipe", aliases=("-b",))
    # On resume --lr (or --lr-scaling) sets the base lr, which the schedule's drops so far then divide.
    lr: float = setting(0.01, "learning rate", resume=True, group="recipe")
    lr_scaling: str = setting("none", "linear: lr x effective batch / 128 (Krizhevsky 2014); none: lr as given",
                              choices=("none", "linear"), resume=True, group="recipe")
    momentum: float = setting(0.9, "SGD momentum", resume=True, group="recipe")
    weight_decay: float = setting(5e-4, "weight decay, on weights", group="recipe", aliases=("--wd",), resume=True)
    bias_decay: bool = setting(False, "weight decay on biases too (the original code had none)", group="recipe",
                               resume=True)
    schedule: str = setting("plateau", "plateau: lr / 10 when val error stalls, <= 3 times; step: at --lr-steps",
                            demo="step", choices=("plateau", "step"), fixed=_SCHEDULE, group="recipe")
    patience: int = setting(5, "plateau: epochs without improvement before a drop", fixed=_SCHEDULE, group="recipe")
    lr_steps: list = setting([], "step: epochs after which lr / 10, e.g. 30,60,80", demo=[5], parse=_ints,
                             metavar="EPOCHS", fixed=_SCHEDULE, group="recipe")
    num_classes: int | None = setting(None, "classes to train on", demo=10, parse=int,
                                      shown="the number of class folders",
                                      fixed="the network's fc8 has one output per class; to train on other classes "
                                            "start a new run from its weights with --init-from CKPT (fc8 is then "
                                            "drawn afresh)", group="data", hidden=("--num_classes",))
    in_channels: int = setting(3, "3 (RGB) or 1 (grey)", group="data", hidden=("--in_channels",),
                               fixed="the network's conv1 takes that many channels; leave it out, or start a new run")
    layout: str = setting("auto", "auto: two-device on 2+ GPUs, tower-parallel under torchrun, merged otherwise",
                          choices=("auto", "merged", "two-device", "tower-parallel"), resume=True, evaluate=True,
                          placement=True, group="torchrun")
    init: str = setting("paper", "paper: biases 1, std 0.01; caffe: biases 0.1, fc6/fc7 std 0.005", demo="caffe",
                        choices=("paper", "caffe"),
                        fixed="it draws a new run's first weights, and a resumed run's weights are the checkpoint's; "
                              "leave it out", group="recipe")
    dropout: float = setting(0.5, "dropout on the outputs of fc6 and fc7", resume=True, group="recipe")
    seed: int = setting(0, "seed of the initial weights, data order, augmentation and dropout",
                        fixed="it fixes the data order, augmentation and dropout of every epoch, so that a resumed "
                              "run goes on as if never stopped; leave it out, or start a new run from its weights "
                              "with --init-from CKPT", group="recipe")
    workers: int = setting(1, "data loader processes", aliases=("-j",), resume=True, evaluate=True,
                           shown="the usable CPU cores minus one, at least 1; under torchrun each rank takes its "
                                 "share of the machine's cores", group="data")
    # Where a new run folder goes: a resume names its own folder, or starts one here (run_folder.run_folder_of).
    out: str = setting("runs", "parent folder of run folders (RUN = OUT/RUN_NAME)", group="run",
                       aliases=("--output-dir",), metavar="DIR", resume=True, afresh=True)
    run_name: str | None = setting(None, "run folder name", group="run", parse=str, metavar="NAME",
                                   shown="run-YYYYmmdd-HHMMSS", afresh=True)
    resume: str | None = setting(None, "auto (latest run under --out), a run folder or a checkpoint file; with "
                                       "--test-only: evaluate it instead", group="run", parse=str,
                                 metavar="auto|RUN|CKPT", afresh=True)
    # Per invocation: a limit the checkpoint carried would stop every later resume before its first step.
    max_steps: int | None = setting(None, "stop after this many training steps of this invocation (the epoch then "
                                          "validates and checkpoints); a resume without it trains on to --epochs",
                                    parse=int, resume=True, afresh=True, group="run")
    # --amp alone is bf16 (torchvision's --amp is fp16 with a loss scaler; _FP16 says why not here).
    amp: str | None = setting(None, "bf16 autocast (CUDA); --amp alone is bf16", group="speed", choices=("bf16",),
                              bare="bf16", refused=dict(fp16=_FP16), resume=True, evaluate=True)
    channels_last: bool = setting(False, "channels-last memory format (pays with bf16 on GPUs)", resume=True,
                                  evaluate=True, group="speed")
    compile: bool = setting(False, "torch.compile the model: a minute or more of compiling, then faster steps on "
                                   "a GPU", resume=True, evaluate=True, group="speed")
    cuda_graphs: bool = setting(False, "replay each step's forward and backward from a CUDA graph, so the GPU never "
                                       "waits for Python (one GPU: merged, or two-device with both towers on it)",
                                resume=True, placement=True, group="speed")
    device: str = setting("auto", "merged layout: cpu, cuda, cuda:1; torchrun: cpu or cuda, each rank on "
                                  "cuda:LOCAL_RANK", metavar="DEV", shown="cuda when there is one", resume=True, evaluate=True,
                          placement=True, group="torchrun")
    devices: list | None = setting(None, "two-device layout: the towers' devices, e.g. cuda:0,cuda:1 or cpu,cpu",
                                   parse=_strs, metavar="DEV,DEV", resume=True, evaluate=True, placement=True,
                                   group="torchrun")
    pca: str = setting("paper", "PCA colour noise strength", group="recipe", choices=("paper", "original", "none"),
                       resume=True)
    crop: int = setting(224, "crop size: 224 (paper) or 227 (caffe)", choices=(224, 227),
                        fixed="the network was trained on crops of that size; leave it out, or start a new run from "
                              "its weights with --init-from CKPT", group="recipe")
    mean: list | None = setting(None, "per-channel mean on 0..255, e.g. 123.7,116.3,103.5", parse=_floats,
                                metavar="R,G,B", shown="computed", fixed=_MEAN, group="data")
    mean_images: int = setting(10000, "images sampled to compute the mean", fixed=_MEAN, group="data")
    val_crops: int = setting(1, "per-epoch validation: 1 (centre) or 10 crops", group="recipe", choices=(1, 10),
                             resume=True)
    max_corrupt: int = setting(100, "unreadable images skipped before giving up", resume=True, group="data")
    keep: int = setting(2, "epoch checkpoints kept besides best.pt", resume=True, group="run")
    train_per_class: int = setting(0, "built-in set: training images per class", group="data", shown="", demo=40,
                                   fixed=_BUILT_IN)
    val_per_class: int = setting(0, "built-in set: validation images per class", group="data", shown="", demo=10,
                                 fixed=_BUILT_IN)
    dist_timeout: float = setting(300.0, "torchrun: seconds a rank waits on a silent peer before it stops",
                                  resume=True, group="torchrun")
    decode: str = setting("auto", "where JPEGs are decoded and cropped: cpu (loader workers, PIL), gpu (nvJPEG on "
                                  "the training GPU; workers only read files), auto: gpu on a CUDA device when the "
                                  "data folder is prepared (all images 256x256), else cpu",
                          choices=("auto", "cpu", "gpu"), resume=True, evaluate=True, placement=True, group="speed")
    cpu_decode_share: str | float = setting(
        "auto", "with --decode gpu: the fraction of JPEGs the loader workers decode on their cores (libjpeg-turbo), "
                "the rest on the GPU; auto: W*c / (W*c + G) for W workers at c images/s each and the GPU's G "
                "(data/gpu/decode.py)", parse=_auto_or_number, resume=True, evaluate=True, group="speed")
    init_from: str | None = setting(None, "start a new run (epoch 1, fresh optimizer) from the weights of a checkpoint, "
                                          "run folder or .safetensors file; fc8 is drawn afresh when the number of "
                                          "classes differs", group="run", parse=str, metavar="WEIGHTS")
    log_every: int | None = setting(None, "with stdout not a terminal, a progress line every N steps (0: none)",
                                    group="run", aliases=("--print-freq",), parse=int, metavar="N",
                                    shown="about every 30 s of training", resume=True)
    tensorboard: bool = setting(False, "TensorBoard event files in RUN/tensorboard (pip install "
                                       "'alexnet2gpu[tensorboard]')", resume=True, group="run")

    def describe(self) -> str:
        return "\n".join(f"  {f.name:16s} {getattr(self, f.name)!r}" for f in fields(self))


def _marked(flag: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(Config) if f.metadata[flag])


DEMO = {f.name: f.metadata["demo"] for f in fields(Config) if f.metadata["demo"] is not MISSING}
RESUMABLE = _marked("resume")  # a resumed run may change these; everything else comes from the checkpoint
EVALUATION = _marked("evaluate")  # --evaluate may change these; everything else comes from the checkpoint
# Where a run computes is chosen afresh on resume (checkpoints load into any layout and world size), so a
# run begun under torchrun continues in one process, or the other way round, without flags to undo.
PLACEMENT = _marked("placement")
AFRESH = _marked("afresh")  # each invocation's own: placement, --max-steps, --resume ...


def resume_config(saved: dict, given: dict) -> Config:
    """A resumed run's config: the checkpoint's, with the settings that are each invocation's own as given (or
    their defaults) and the flags in `given` that a resumed run may change."""
    known = {f.name for f in fields(Config)}
    cfg = Config(**{k: v for k, v in saved.items() if k in known})
    for k in AFRESH:
        setattr(cfg, k, given.get(k, getattr(Config(), k)))
    for k in RESUMABLE:
        if k in given:
            setattr(cfg, k, given[k])
    return cfg
