"""Ground truth for ILSVRC's flat val/ folder: the class folder each validation image belongs in.

Two forms, told apart by the first line:
  csv   LOC_val_solution.csv (ILSVRC-2012 from Kaggle): the header `ImageId,PredictionString`, then rows
        `ILSVRC2012_val_00000001,n01751748 46 60 431 388 ...`: the image's name without extension and its
        boxes, each box starting with the wnid.
  text  one line per image, `<filename> <wnid>` (the filename with or without its extension), or one bare
        `<wnid>` per line for every image of val/ in sorted filename order.
An image named on two lines with two classes is refused (one of them is wrong, and only the user knows
which); named twice with one class it is taken.
"""
from __future__ import annotations

from pathlib import Path

from alexnet2gpu.errors import PrepareError

from ..imaging import IMAGE_EXTENSIONS

DEFAULT_FILES = ("LOC_val_solution.csv", "val_labels.txt")  # looked for in SRC when --val-labels is not given
CSV_HEADER = ("ImageId", "PredictionString")


def image_key(name: str) -> str:
    """The name an image is known by in a labels file: its file name without an image extension."""
    return name[: name.rfind(".")] if name.lower().endswith(IMAGE_EXTENSIONS) else name


def find_labels_file(src: Path, given: str | None, images: int) -> Path:
    """--val-labels if given, else the first of DEFAULT_FILES in SRC; an error when there is none."""
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise PrepareError(f"--val-labels {given} does not exist: pass LOC_val_solution.csv or a text file of "
                               "'<filename> <wnid>' lines.")
        return path
    for name in DEFAULT_FILES:
        if (Path(src) / name).is_file():
            return Path(src) / name
    raise PrepareError(f"{Path(src) / 'val'} holds {images} images directly (ILSVRC's flat validation set) and "
                       f"no labels were found to sort them into class folders: pass --val-labels FILE "
                       f"(LOC_val_solution.csv, or a text file of '<filename> <wnid>' lines) or put it at "
                       f"{Path(src) / DEFAULT_FILES[0]} or {Path(src) / DEFAULT_FILES[1]}.")


def read_val_labels(path: Path, filenames: list[str]) -> dict[str, str]:
    """filename -> class folder name for the flat val/ files given; files the labels do not name are left out."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise PrepareError(f"cannot read the labels file {path} ({getattr(e, 'strerror', None) or e}): pass a "
                           "readable LOC_val_solution.csv or text file with --val-labels.") from None
    # numbered as in the file, blank lines counted, for the messages
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise PrepareError(f"the labels file {path} is empty: pass LOC_val_solution.csv or a text file of "
                           "'<filename> <wnid>' lines with --val-labels.")
    by_key = _read_csv(path, lines) if "," in lines[0][1] else _read_text(path, lines, filenames)
    labels = {name: by_key[image_key(name)] for name in filenames if image_key(name) in by_key}
    if filenames and not labels:
        raise PrepareError(f"the labels file {path} names none of the {len(filenames)} images in val/ (such as "
                           f"{sorted(filenames)[0]}): pass the labels of this validation set with --val-labels.")
    for name, wnid in labels.items():
        if wnid in (".", "..") or "/" in wnid or "\\" in wnid:
            raise PrepareError(f"the labels file {path} gives {name} the class {wnid!r}, which cannot be a folder "
                               "name: fix that line.")
    return labels


def _read_csv(path: Path, lines: list[tuple[int, str]]) -> dict[str, str]:
    header = tuple(cell.strip() for cell in lines[0][1].split(","))
    if header != CSV_HEADER:
        raise PrepareError(f"{path} starts with {lines[0][1]!r}, not {','.join(CSV_HEADER)!r}: pass "
                           "LOC_val_solution.csv itself, or a text file of '<filename> <wnid>' lines.")
    entries = []
    for number, line in lines[1:]:
        image_id, _, boxes = line.partition(",")
        if not image_id or not boxes.split():
            raise PrepareError(f"line {number} of {path} ({line!r}) is not 'ImageId,wnid ...': fix or remove it.")
        entries.append((number, image_id.strip(), boxes.split()[0]))
    return _by_key(path, entries)


def _read_text(path: Path, lines: list[tuple[int, str]], filenames: list[str]) -> dict[str, str]:
    words = [line.split() for _, line in lines]
    widths = {len(w) for w in words}
    if widths == {1}:  # bare wnids: the n-th line labels the n-th image in sorted filename order
        if len(words) != len(filenames):
            raise PrepareError(f"{path} has {len(words)} lines of one wnid each but val/ holds {len(filenames)} "
                               "images: this form needs exactly one line per image in sorted filename order "
                               "(or use '<filename> <wnid>' lines).")
        return {image_key(name): w[0] for name, w in zip(sorted(filenames), words)}
    bad = next(((number, line) for (number, line), w in zip(lines, words) if len(w) != 2), None)
    if bad is not None:
        raise PrepareError(f"line {bad[0]} of {path} ({bad[1]!r}) is not '<filename> <wnid>': every line "
                           "needs the same form, one filename and one wnid.")
    return _by_key(path, [(number, *w) for (number, _), w in zip(lines, words)])


def _by_key(path: Path, entries: list[tuple[int, str, str]]) -> dict[str, str]:
    """image_key -> wnid from (line number, image name, wnid). An image named twice with one class is taken
    (joined files); with two classes it is refused, since only the user knows which is right."""
    out, first = {}, {}
    for number, name, wnid in entries:
        key = image_key(name)
        if key in out and out[key] != wnid:
            raise PrepareError(f"{path} gives {first[key][1]} two classes, {out[key]} on line {first[key][0]} and "
                               f"{wnid} on line {number}: remove the wrong line.")
        out.setdefault(key, wnid)
        first.setdefault(key, (number, name))
    return out
