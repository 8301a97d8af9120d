"""What prepare writes: SRC/<split>/<class>/.../<name> -> DST/<split>/<class>/.../<name>, and which are done.

Files are found as train.py finds them, by the same code (walk.py): every file with an image extension under
each class folder, following links, each real folder once; dot-named folders are not classes. ILSVRC's flat
val/ (images directly in val/) is sorted into class folders by a labels file (val_labels.py). An output that exists and is not empty is
done; temporary files a killed run left behind are removed.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from alexnet2gpu.errors import PrepareError

from ..imaging import IMAGE_EXTENSIONS
from ..walk import SharedFiles, class_folders, no_images, walk_classes
from .val_labels import find_labels_file, read_val_labels

SPLITS = ("train", "val")
JPEG_EXTENSIONS = (".jpeg", ".jpg", ".jpe")
OUTPUT_EXTENSION = ".jpg"  # for sources of other formats; JPEG-named sources keep their name (ILSVRC's .JPEG)


@dataclass(frozen=True, slots=True)
class Job:
    split: str
    source: str
    output: str


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)  # split -> number of classes
    skipped: dict[str, int] = field(default_factory=dict)  # split -> outputs already done
    unlabelled: list[tuple[str, str]] = field(default_factory=list)  # (source, reason): flat val/ without a label
    labels_file: Path | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return "; ".join(self.notes)


def output_names(names: list[str]) -> dict[str, str]:
    """Source file name -> output file name, within one folder.

    JPEG names are kept (ILSVRC's n01440764_10026.JPEG stays so); others get .jpg (photo.png -> photo.jpg),
    or their whole name plus .jpg where two sources would meet (photo.png beside photo.jpg -> photo.png.jpg).
    """
    wanted = {n: n if n.lower().endswith(JPEG_EXTENSIONS) else os.path.splitext(n)[0] + OUTPUT_EXTENSION
              for n in names}
    claims = Counter(wanted.values())
    return {n: out if n == out or claims[out] == 1 else n + OUTPUT_EXTENSION for n, out in wanted.items()}


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def flat_images(folder: Path) -> list[str]:
    """Image files directly in `folder` (ILSVRC's flat val/), by name."""
    return sorted(f.name for f in folder.iterdir() if f.is_file() and is_image(f.name))


def split_pairs(src_split: Path, dst_split: Path, classes: list[str], warn=print) -> dict[str, list[tuple[str, str]]]:
    """class -> (source, output) for every image under its class folder, as train.py lists them
    (walk.walk_classes: each real folder once, `warn` naming a skipped link loop, none shared by two classes)."""
    try:
        walks = walk_classes(src_split, classes, warn)
    except SharedFiles as e:
        raise PrepareError(str(e)) from None
    return {c: class_pairs(src_split / c, dst_split / c, walks[c]) for c in classes}


def class_pairs(src_class: Path, dst_class: Path, walk: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    """(source, output) for every image of one class folder's walk, sub-folders kept."""
    pairs = []
    for root, files in walk:
        names = output_names([f for f in files if is_image(f)])
        out_root = dst_class / os.path.relpath(root, src_class)
        pairs += [(os.path.join(root, n), os.path.normpath(out_root / out)) for n, out in names.items()]
    return pairs


def scan_outputs(folder: Path, tmp_suffix: str) -> set[str]:
    """Finished outputs under `folder` (non-empty files); removes the temporary files of a killed run.

    Empty files count as not done: after a power cut a renamed file can be empty if its data never reached
    the disk.
    """
    done = set()
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            try:
                if name.endswith(tmp_suffix):
                    os.unlink(path)
                elif os.path.getsize(path) > 0:
                    done.add(os.path.normpath(path))
            except FileNotFoundError:
                pass
    return done


def plan_jobs(src: Path, dst: Path, val_labels: str | None, tmp_suffix: str) -> Plan:
    splits = [s for s in SPLITS if (src / s).is_dir()]
    if not splits:
        raise PrepareError(f"SRC {src} has neither train/ nor val/: pass the folder that holds them "
                           "(ILSVRC-2012: the one with train/<wnid>/*.JPEG).")
    plan = Plan()
    train_classes = class_folders(src / "train") if "train" in splits else None
    for split in splits:
        by_class = split_pairs(src / split, dst / split, class_folders(src / split))
        pairs = [p for c in by_class for p in by_class[c]]
        flat = flat_images(src / split) if split == "val" else []
        flat_pairs = flat_val_pairs(plan, src, dst, flat, val_labels, train_classes) if flat else []
        pairs += flat_pairs
        from_flat = {Path(out).parent.name for _, out in flat_pairs}
        classes = sorted(set(by_class) | from_flat)
        if not classes:
            raise PrepareError(f"{src / split} has no class folders{' and no images' if split == 'val' else ''}: put "
                               f"each class's images in {src / split}/<class>/ (ILSVRC: <wnid>/*.JPEG).")
        empty = [c for c in by_class if not by_class[c] and c not in from_flat]
        if empty:  # train.py would refuse the output (folders.list_samples): say so before writing anything
            raise PrepareError(no_images(src / split, empty))
        done = scan_outputs(dst / split, tmp_suffix)
        todo = [Job(split, s, out) for s, out in pairs if out not in done]
        plan.jobs += todo
        plan.splits[split] = len(classes)
        plan.skipped[split] = len(pairs) - len(todo)
        plan.notes.append(f"{split}: {len(pairs)} images in {len(classes)} classes"
                          + (f" (flat val/ sorted by {plan.labels_file}, {len(plan.unlabelled)} not labelled there)"
                             if flat else ""))
    for folder in sorted({os.path.dirname(job.output) for job in plan.jobs}):
        os.makedirs(folder, exist_ok=True)
    return plan


def flat_val_pairs(plan: Plan, src: Path, dst: Path, flat: list[str], val_labels: str | None,
                   train_classes: list[str] | None) -> list[tuple[str, str]]:
    """(source, output) for the images directly in val/, each into the class folder its label names."""
    plan.labels_file = find_labels_file(src, val_labels, len(flat))
    labels = read_val_labels(plan.labels_file, flat)
    if train_classes is not None:
        known = set(train_classes)
        unknown = sorted((wnid, name) for name, wnid in labels.items() if wnid not in known)
        if unknown:
            wnid, name = unknown[0]
            raise PrepareError(f"{plan.labels_file} gives {len({w for w, _ in unknown})} classes that are not class "
                               f"folders of {src / 'train'}, such as {wnid!r} for {name}: pass the labels of this "
                               "data set (wnids such as n01440764, not class numbers).")
    names = output_names(flat)
    plan.unlabelled += [(str(src / "val" / f), f"no label in {plan.labels_file}") for f in flat if f not in labels]
    return [(str(src / "val" / f), os.path.normpath(dst / "val" / labels[f] / names[f])) for f in flat if f in labels]
