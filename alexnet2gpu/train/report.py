"""What a run leaves to look at: RUN/metrics.csv (one row per epoch), RUN/curves.png (drawn with matplotlib),
RUN/conv1_kernels.png (drawn with PIL).

conv1_kernels.png shows the 96 conv1 kernels as two tower grids of 48, like the paper's Figure 3, where
tower 0's kernels came out largely colour-agnostic and tower 1's colour-specific (§6.1). `colourfulness`
puts a number on that per tower so the split can be followed epoch by epoch in metrics.csv.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from alexnet2gpu.files import atomic_write

from .plot import drawable, figure, line_chart, number, save

COLUMNS = ("epoch", "train_loss", "val_loss", "val_top1_error", "val_top5_error", "lr", "images_per_s", "seconds",
           "loader_images_per_s", "step_images_per_s", "colour_tower0", "colour_tower1", "steps", "corrupt_images",
           "val_images", "val_skipped")  # the val errors are over val_images; val_skipped could not be read


def colourfulness(conv1_weight: torch.Tensor, towers: int = 2) -> list[float]:
    """Per tower: mean over its kernels of |w - grey(w)| / |w|, where grey(w) repeats the kernel's mean over
    colour channels. 0 for a kernel that weighs R, G and B alike (colour-agnostic), up to ~0.8 for one that
    sees a single channel. One value per tower; empty for a grey (1-channel) network."""
    w = conv1_weight.detach().float().cpu()
    if w.shape[1] < 2:
        return []
    grey = w.mean(dim=1, keepdim=True)
    ratio = (w - grey).flatten(1).norm(dim=1) / w.flatten(1).norm(dim=1).clamp_min(1e-12)
    return [float(chunk.mean()) for chunk in ratio.chunk(towers)]


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Rewrite the whole file from the run's history (it lives in the checkpoint), so a resumed run's
    metrics.csv is exactly that of an uninterrupted one."""
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(row.get(k, "")) for k in COLUMNS})

    atomic_write(path, write)


def _cell(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def _columns(rows: list[dict], names: dict[str, str]) -> dict[str, list]:
    """{label: column} for each metrics column ({label: key}) that some row has: older runs' rows lack the
    newer columns, which are left out rather than drawn as gaps."""
    out = {label: [r.get(key) for r in rows] for label, key in names.items()}
    return {label: ys for label, ys in out.items() if any(y not in (None, "") for y in ys)}


def curves_figure(rows: list[dict], title: str = ""):
    """Four panels by epoch: train and val loss, val top-1 and top-5 error, the lr (log scale), images/s."""
    epochs = [int(r["epoch"]) for r in rows]
    fig, ((loss, error), (lr, speed)) = figure(12, 7.5, nrows=2, ncols=2, sharex=True)
    losses = _columns(rows, {"train loss": "train_loss", "val loss": "val_loss"})
    positive = [y for ys in losses.values() for y in map(number, ys) if drawable(y, log=True)]
    # A loss that grows by orders of magnitude (divergence) would flatten the others against the axis.
    line_chart(loss, epochs, losses, "loss", "cross-entropy",
               log=bool(positive) and max(positive) > 1e3 * min(positive))
    # No top-5 column with 5 classes or fewer (engine.has_top5): _columns leaves it out.
    errors = _columns(rows, {"val top-1 error": "val_top1_error", "val top-5 error": "val_top5_error"})
    line_chart(error, epochs, errors, "validation error", "error (%)")
    line_chart(lr, epochs, _columns(rows, {"lr": "lr"}), "learning rate", "lr", log=True)
    speeds = _columns(rows, {"training images/s": "images_per_s"})
    line_chart(speed, epochs, speeds, "throughput", "images/s")
    rates = [y for ys in speeds.values() for y in map(number, ys) if drawable(y)]
    if rates and min(rates) >= 0:
        speed.set_ylim(0, 1.15 * max(rates) or 1)  # a rate is read from zero
    for ax in (lr, speed):
        ax.set_xlabel("epoch")
    fig.suptitle(title)
    return fig


def curves_title(run_name: str, rows: list[dict]) -> str:
    """The run, its epochs, and its best epoch by val top-1 error."""
    done = f"{run_name}: {len(rows)} epoch{'s' * (len(rows) != 1)}"
    scored = [r for r in rows if drawable(number(r.get("val_top1_error")))]
    if not scored:
        return done
    best = min(scored, key=lambda r: number(r["val_top1_error"]))
    return f"{done}, best val top-1 error {number(best['val_top1_error']):.2f} % at epoch {best['epoch']}"


def save_curves(path: Path, rows: list[dict]) -> None:
    """curves.png in the run folder `path` lies in, written whole or not at all."""
    save(curves_figure(rows, curves_title(Path(path).parent.name, rows)), path)


def save_conv1_kernels(path: Path, conv1_weight: torch.Tensor, towers: int = 2, scale: int = 4) -> None:
    """The conv1 kernels as one grid per tower (8 columns), each kernel stretched to 0..255 on its own."""
    w = conv1_weight.detach().float().cpu()
    if w.shape[1] not in (1, 3):
        return
    w = w.expand(-1, 3, -1, -1) if w.shape[1] == 1 else w
    k = w.shape[-1] * scale
    gap, cols = 2, 8
    per_tower = w.shape[0] // towers
    rows = math.ceil(per_tower / cols)
    grid_w, grid_h = cols * (k + gap) + gap, rows * (k + gap) + gap
    colours = colourfulness(conv1_weight, towers) or [0.0] * towers
    img = Image.new("RGB", (towers * grid_w + (towers - 1) * 16, grid_h + 18), "white")
    draw = ImageDraw.Draw(img)
    for t in range(towers):
        x0 = t * (grid_w + 16)
        draw.text((x0 + 2, 2), f"tower {t}  colourfulness {colours[t]:.2f}", fill="black", font=ImageFont.load_default())
        for i in range(per_tower):
            kern = w[t * per_tower + i]
            lo, hi = kern.min(), kern.max()
            pix = ((kern - lo) / (hi - lo).clamp_min(1e-12) * 255).permute(1, 2, 0).numpy().astype(np.uint8)
            tile = Image.fromarray(pix, "RGB").resize((k, k), Image.NEAREST)
            r, c = divmod(i, cols)
            img.paste(tile, (x0 + gap + c * (k + gap), 18 + gap + r * (k + gap)))
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
