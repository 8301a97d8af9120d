"""Classify images: python -m alexnet2gpu.predict WEIGHTS IMAGE_OR_FOLDER ..., one line per image.

    python -m alexnet2gpu.predict runs/RUN/checkpoints/best.pt photo.jpg
    python -m alexnet2gpu.predict alexnet.safetensors photos/ --center-crop --top 3

WEIGHTS: a train.py checkpoint, a run folder or a .safetensors file (an exported .onnx or .pt2 file runs in
ONNX Runtime or torch.export.load: docs/using-weights.md shows how). Each image goes through the
validation path of training (data/folders.py: shorter side to 256, centre 256x256, then ten crops: four corners,
centre and their mirror images, whose softmax probabilities are averaged, paper §4.1; or the centre crop
alone with --center-crop), minus the training mean. A folder stands for every image in it (and in its
sub-folders). Each line: the image's path, then the top-5 classes with their probabilities. Class names
are the training run's class folders; ILSVRC wnids (n01440764) are shown with their words when the
training data folder (or --synsets) has the usual synset words file.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from alexnet2gpu.data.device_input import InputSpec, crop_probabilities
from alexnet2gpu.data.folders import EpochSampler, FolderDataset, make_loader
from alexnet2gpu.data.imaging import IMAGE_EXTENSIONS
from alexnet2gpu.errors import TrainError

from .hub import load_network
from .io import load_weights

SYNSET_FILES = ("LOC_synset_mapping.txt", "synset_words.txt")  # "n01440764 tench, Tinca tinca" per line


def image_paths(args: list[str]) -> list[str]:
    """Files as given; folders expanded to their images (sorted, sub-folders included)."""
    paths = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            found = sorted(os.path.join(root, f) for root, _, files in os.walk(p, followlinks=True)
                           for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise TrainError(f"folder {p} holds no images ({', '.join(IMAGE_EXTENSIONS)}): pass image files "
                                 "or a folder of them.")
            paths += found
        elif p.is_file():
            paths.append(str(p))
        else:
            raise TrainError(f"{p} does not exist: pass image files or folders of images.")
    return paths


def read_synsets(path) -> dict[str, str]:
    """wnid -> its first word ("tench") from a file of "n01440764 tench, Tinca tinca" lines."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise TrainError(f"the synset words file {path} could not be read ({e.strerror or e}): pass --synsets a file "
                         "of 'n01440764 tench, Tinca tinca' lines, or leave --synsets out.") from None
    names = {}
    for line in text.splitlines():
        wnid, _, words = line.strip().partition(" ")
        if wnid and words:
            names[wnid] = words.split(",")[0].strip()
    return names


def find_synsets(data_root) -> Path | None:
    """The synset words file in the training data folder (or its parent), if there is one."""
    if not data_root:
        return None
    for folder in (Path(data_root), Path(data_root).parent):
        for name in SYNSET_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def class_names(classes: list[str] | None, num_classes: int, synsets: dict[str, str]) -> list[str]:
    """Display names in label order: "tench (n01440764)" for a known wnid, else the class folder's name."""
    classes = classes or [f"class {i}" for i in range(num_classes)]
    return [f"{synsets[c]} ({c})" if c in synsets else c for c in classes]


def predict(weights_path, inputs: list[str], ten_crop: bool = True, top: int = 5, device="cpu",
            batch_size: int = 16, workers: int = 0, synsets_file=None, out=print, err=None) -> list[tuple]:
    """Print one line per image (path, then the `top` classes and probabilities); returns
    (path, [(name, probability), ...]) per readable image. Unreadable images are named on `err`."""
    err = err or (lambda line: print(line, file=sys.stderr))
    given = read_synsets(synsets_file) if synsets_file else None  # a mistyped --synsets is said before the weights load
    weights = load_weights(weights_path)
    if weights.mean is None:
        raise TrainError(f"{weights.path} has no training mean: export it again from a train.py checkpoint.")
    paths = image_paths(inputs)
    found = find_synsets(weights.config.get("data")) if given is None else None
    names = class_names(weights.classes, weights.num_classes, given or (read_synsets(found) if found else {}))
    model = load_network(weights, device=device).eval()
    spec = InputSpec(torch.device(device), torch.tensor(weights.mean, dtype=torch.float32))
    dataset = FolderDataset([(p, 0) for p in paths], "ten" if ten_crop else "center", weights.in_channels,
                            crop=weights.crop)
    loader = make_loader(dataset, EpochSampler(len(paths), 0, shuffle=False), batch_size, workers)
    k = min(top, weights.num_classes)
    results, start = [], 0
    with torch.no_grad():
        for batch, x, _ in spec.batches(loader, train=False):
            here = paths[start:start + batch_size]  # the sampler keeps the order; a batch drops unreadable files
            start += len(here)
            for path in batch.corrupt:
                err(f"predict: {path} could not be read as an image: skipped")
            if not len(batch):
                continue
            probs, labels = crop_probabilities(model, x, spec).topk(k, dim=1)
            for path, p_row, l_row in zip([p for p in here if p not in batch.corrupt], probs.tolist(),
                                          labels.tolist()):
                ranked = [(names[label], p) for label, p in zip(l_row, p_row)]
                out(f"{path}: " + " | ".join(f"{name} {p:.3f}" for name, p in ranked))
                results.append((path, ranked))
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m alexnet2gpu.predict", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
    p.add_argument("weights", help="a train.py checkpoint, a run folder or a .safetensors file")
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--center-crop", action="store_true", help="the centre crop only (default: ten crops)")
    p.add_argument("--top", type=int, default=5, help="classes shown per image (default 5)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda, cuda:1 (default: cuda when there is one)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--workers", type=int, default=0, help="image decoding processes (default 0: this one)")
    p.add_argument("--synsets", help="a file of 'n01440764 tench, Tinca tinca' lines naming the classes "
                                     "(default: LOC_synset_mapping.txt or synset_words.txt in the training data)")
    args = p.parse_args(argv)
    if args.top < 1 or args.batch_size < 1:
        p.error("--top and --batch-size must be at least 1")
    unreadable = []

    def err(line):
        unreadable.append(line)
        print(line, file=sys.stderr)
    try:
        predict(args.weights, args.images, not args.center_crop, args.top, args.device, args.batch_size,
                args.workers, args.synsets, err=err)
    except (TrainError, ValueError) as e:
        print(f"predict: error: {e}", file=sys.stderr)
        return 1
    return 1 if unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
