"""Tiny charts with PIL alone (no matplotlib): line charts for training curves, bar charts for bench.py."""
from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75))
W, H = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 50


def _font():
    return ImageFont.load_default()


def _nice_range(lo: float, hi: float) -> tuple[float, float, float]:
    """Axis bounds and tick step covering [lo, hi] with round numbers."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        lo, hi = 0.0, 1.0
    if hi - lo <= 1e-9 * max(1.0, abs(lo), abs(hi)):  # one value (or several equal ones), however large
        half = 0.5 * max(1.0, abs(hi))
        lo, hi = lo - half, hi + half
    raw = (hi - lo) / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step, step


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def _axes(draw, title: str, xlabel: str, ylabel: str, ylo: float, yhi: float, ystep: float):
    font = _font()
    draw.text((LEFT, 12), title, fill="black", font=font)
    draw.text((W // 2 - 20, H - 18), xlabel, fill="black", font=font)
    draw.text((4, 22), ylabel, fill="black", font=font)
    draw.rectangle((LEFT, TOP, W - RIGHT, H - BOTTOM), outline="black")
    v = ylo
    while v <= yhi + ystep / 2:
        y = _ymap(v, ylo, yhi)
        draw.line((LEFT - 4, y, W - RIGHT, y), fill=(225, 225, 225))
        draw.text((4, y - 6), _fmt(v), fill="black", font=font)
        v += ystep


def _ymap(v: float, lo: float, hi: float) -> float:
    return H - BOTTOM - (v - lo) / (hi - lo) * (H - BOTTOM - TOP)


def line_chart(path, series: dict[str, tuple[list[float], list[float]]], title: str = "", xlabel: str = "",
               ylabel: str = "") -> Image.Image:
    """A chart with a line per series: {name: (xs, ys)}; non-finite points are left out. Saved as a PNG at
    `path` unless it is None (then only returned, for a caller that composes charts)."""
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    points = {k: [(x, y) for x, y in zip(*v) if math.isfinite(y)] for k, v in series.items()}
    xs = [x for pts in points.values() for x, _ in pts] or [0, 1]
    ys = [y for pts in points.values() for _, y in pts] or [0, 1]
    ylo, yhi, ystep = _nice_range(min(ys), max(ys))
    xlo, xhi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    _axes(draw, title, xlabel, ylabel, ylo, yhi, ystep)
    font = _font()
    for i, (name, pts) in enumerate(points.items()):
        colour = COLOURS[i % len(COLOURS)]
        xy = [(LEFT + (x - xlo) / (xhi - xlo) * (W - LEFT - RIGHT), _ymap(y, ylo, yhi)) for x, y in pts]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        draw.text((W - RIGHT - 150, TOP + 6 + 14 * i), name, fill=colour, font=font)
    for x in sorted(set(xs))[:: max(1, len(set(xs)) // 10)]:
        draw.text((LEFT + (x - xlo) / (xhi - xlo) * (W - LEFT - RIGHT) - 4, H - BOTTOM + 4), _fmt(x), fill="black", font=font)
    if path is not None:
        img.save(path)
    return img


def bar_chart(path, labels: list[str], values: list[float], title: str = "", ylabel: str = "") -> None:
    """One PNG with a labelled bar per value (bench.py: images/s per layout)."""
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    finite = [v for v in values if math.isfinite(v)]
    ylo, yhi, ystep = _nice_range(min(0.0, *finite) if finite else 0.0, max(finite) if finite else 1.0)
    _axes(draw, title, "", ylabel, ylo, yhi, ystep)
    font = _font()
    slot = (W - LEFT - RIGHT) / max(1, len(values))
    for i, (label, v) in enumerate(zip(labels, values)):
        x0 = LEFT + i * slot + slot * 0.15
        x1 = LEFT + (i + 1) * slot - slot * 0.15
        if math.isfinite(v):
            draw.rectangle((x0, _ymap(v, ylo, yhi), x1, _ymap(max(ylo, 0.0), ylo, yhi)), fill=COLOURS[i % len(COLOURS)])
            draw.text((x0, _ymap(v, ylo, yhi) - 14), _fmt(v), fill="black", font=font)
        draw.text((x0, H - BOTTOM + 4 + 12 * (i % 2)), str(label)[:24], fill="black", font=font)
    img.save(path)
