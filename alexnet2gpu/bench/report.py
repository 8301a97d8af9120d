"""What a benchmark prints and writes: the table, the speed goals (issue 5), JSON records and a bar chart."""
from __future__ import annotations

import json
import os
from pathlib import Path

# (name, numerator row, denominator row, threshold, what): ratios of images/s of training rows in one run.
GOALS = (
    ("merged vs torchvision", "merged", "torchvision", 1.0, "images/s ratio"),
    ("two-device vs merged", "two-device", "merged", 0.95, "images/s ratio"),
    ("tower-parallel (2 procs) vs merged (1 proc)", "tower-parallel", "merged", 0.9, "images/s ratio"),
    ("merged vs matrix-multiply rate", "merged", None, 0.60, "fraction of the matmul GFLOP/s"),
)


def _fmt_mem(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "/".join(f"{v:.0f}" for v in value)
    return f"{value:.0f}"


def table(records: list[dict]) -> str:
    """One line per row, grouped by batch size, with images/s relative to `merged` of the same batch and mode."""
    head = (f"{'variant':22s} {'mode':6s} {'batch':>5s} {'procs':>5s} {'ms/step':>9s} {'img/s':>8s} {'vs merged':>9s} "
            f"{'GFLOP/s':>8s} {'%matmul':>7s} {'peak MB':>11s} {'exch MB':>8s}  note")
    lines = [head, "-" * len(head)]
    base = {(r["batch_size"], r["mode"]): r["images_per_s"] for r in records if r["variant"] == "merged"}
    for r in records:
        if r["mode"] == "skipped":
            lines.append(f"{r['variant']:22s} {'-':6s} {r['batch_size']:5d} {'':>5s} skipped: {r['note']}")
            continue
        # The loader row is compared with the training step it has to feed.
        ref = base.get((r["batch_size"], "train" if r["mode"] == "load" else r["mode"]))
        vs = f"{r['images_per_s'] / ref:.3f}x" if ref and r["mode"] != "matmul" else ""
        img = f"{r['images_per_s']:.1f}" if r["mode"] != "matmul" else ""
        procs = f"{r['processes']}x{r['threads']}"
        lines.append(f"{r['variant']:22s} {r['mode']:6s} {r['batch_size']:5d} {procs:>5s} {r['ms_per_step']:9.1f} "
                     f"{img:>8s} {vs:>9s} {r['gflops']:8.1f} {100 * r['peak_fraction']:6.1f}% "
                     f"{_fmt_mem(r['peak_memory_mb']):>11s} {r['exchange_mb']:8.1f}  {r.get('note', '')}")
    return "\n".join(lines)


def goals(records: list[dict]) -> list[dict]:
    """The speed goals of issue 5 at each batch size where their rows were measured (training rows)."""
    out = []
    train = {(r["batch_size"], r["variant"]): r for r in records if r["mode"] == "train"}
    for batch in sorted({b for b, _ in train}):
        for name, num, den, threshold, what in GOALS:
            if (batch, num) not in train or (den and (batch, den) not in train):
                continue
            top = train[(batch, num)]
            value = top["images_per_s"] / train[(batch, den)]["images_per_s"] if den else top["peak_fraction"]
            out.append({"goal": name, "batch_size": batch, "value": value, "threshold": threshold, "what": what,
                        "met": value >= threshold})
    return out


def goals_text(results: list[dict]) -> str:
    lines = ["speed goals (issue 5; training, ratios within this run):"]
    for g in results:
        lines.append(f"  batch {g['batch_size']:4d}  {g['goal']:45s} {g['value']:6.3f}  (goal >= {g['threshold']:.2f})  "
                     f"{'met' if g['met'] else 'NOT MET'}")
    return "\n".join(lines)


def write_json(path, records: list[dict]) -> None:
    """One record per row, written to a temporary file then renamed."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(records, indent=1) + "\n")
    os.replace(tmp, path)


def write_plot(path, records: list[dict]) -> None:
    """Images/s per training row (and inference rows when there are no training rows) as a bar chart."""
    try:
        from ..plot import bar_chart
    except ImportError:
        raise ValueError("--plot needs alexnet2gpu/plot.py (bar_chart), which this checkout does not have yet: "
                         "drop --plot, or update to a version with the plotting module.") from None
    rows = [r for r in records if r["mode"] == "train"] or [r for r in records if r["mode"] == "infer"]
    batches = {r["batch_size"] for r in rows}
    labels = [r["variant"] + (f" @{r['batch_size']}" if len(batches) > 1 else "") for r in rows]
    mode = rows[0]["mode"] if rows else "train"
    bar_chart(path, labels, [r["images_per_s"] for r in rows], title=f"AlexNet {mode} throughput ({rows[0]['device'] if rows else ''})",
              ylabel="images/s")
