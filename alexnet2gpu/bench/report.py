"""What a benchmark prints and writes: the table, the speed goals, JSON records and a bar chart."""
from __future__ import annotations

import json
import os
from pathlib import Path

# (name, numerator row, denominator row, threshold, what): ratios of images/s of training rows in one run,
# per device type. The GPU goals compare like with like: each precision and compile mode with its own.
GOALS = {
    "cpu": (
        ("merged vs torchvision", "merged", "torchvision", 1.0, "images/s ratio"),
        ("two-device vs merged", "two-device", "merged", 0.95, "images/s ratio"),
        ("tower-parallel (2 procs) vs merged (1 proc)", "tower-parallel", "merged", 0.9, "images/s ratio"),
        ("merged vs matrix-multiply rate", "merged", None, 0.60, "fraction of the matmul GFLOP/s"),
        ("train.py's loop vs merged's bare step", "train-loop", "merged", 0.95, "images/s ratio"),
    ),
    "cuda": (
        ("merged-bf16 vs torchvision-bf16", "merged-bf16", "torchvision-bf16", 1.0, "images/s ratio"),
        ("merged vs torchvision (fp32)", "merged", "torchvision", 0.9, "images/s ratio"),
        ("merged-bf16-compile vs torchvision-bf16-compile", "merged-bf16-compile", "torchvision-bf16-compile", 0.9,
         "images/s ratio"),
        ("two-device (one GPU) vs merged", "two-device", "merged", 0.95, "images/s ratio"),
        ("train.py's loop vs merged-bf16's bare step", "train-loop", "merged-bf16", 0.95, "images/s ratio"),
        # The same goals with the step replayed from CUDA graphs, like with like, in the form train.py
        # --cuda-graphs builds (cuda_graphs.GRAPH_OPTIONS).
        ("merged-bf16-graphs vs torchvision-bf16-graphs", "merged-bf16-graphs", "torchvision-bf16-graphs", 1.0,
         "images/s ratio"),
        ("merged-bf16-graphs vs torchvision-bf16 (eager)", "merged-bf16-graphs", "torchvision-bf16", 1.0,
         "images/s ratio"),
        ("two-device-graphs vs merged-graphs", "two-device-graphs", "merged-graphs", 0.95, "images/s ratio"),
        ("train-loop-graphs vs merged-bf16-graphs", "train-loop-graphs", "merged-bf16-graphs", 0.95,
         "images/s ratio"),
    ),
}


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
    """The speed goals of the records' device type at each batch size where their rows were measured."""
    out = []
    train = {(r["batch_size"], r["variant"]): r for r in records if r["mode"] == "train"}
    device_type = next((r.get("device_type") for r in records if r.get("device_type")), "cpu")
    for batch in sorted({b for b, _ in train}):
        for name, num, den, threshold, what in GOALS.get(device_type, ()):
            if (batch, num) not in train or (den and (batch, den) not in train):
                continue
            top = train[(batch, num)]
            value = top["images_per_s"] / train[(batch, den)]["images_per_s"] if den else top["peak_fraction"]
            out.append({"goal": name, "batch_size": batch, "value": value, "threshold": threshold, "what": what,
                        "met": value >= threshold})
    return out


def goals_text(results: list[dict]) -> str:
    lines = ["speed goals (training, ratios within this run):"]
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


PLOTTED = {"train": "training", "infer": "inference", "load": "input pipeline"}  # the modes measured in images/s


def write_plot(path, records: list[dict]) -> None:
    """Images/s of each measured row as a horizontal bar, training rows first, then inference, then the input
    pipeline; each bar labelled with its value and its ratio to `merged` of the same batch and mode (the
    loader's to merged's training step, as in the table)."""
    from alexnet2gpu.train.plot import bar_chart
    rows = sorted((r for r in records if r["mode"] in PLOTTED), key=lambda r: list(PLOTTED).index(r["mode"]))
    batches = sorted({r["batch_size"] for r in rows})
    base = {(r["batch_size"], r["mode"]): r["images_per_s"] for r in rows if r["variant"] == "merged"}
    notes = []
    for r in rows:
        ref = base.get((r["batch_size"], "train" if r["mode"] == "load" else r["mode"]))
        notes.append(f"({r['images_per_s'] / ref:.2f}x merged)" if ref and r["variant"] != "merged" else "")
    labels = [f"{r['variant']} ({r['mode']}" + (f", batch {r['batch_size']})" if len(batches) > 1 else ")")
              for r in rows]
    devices = ", ".join(dict.fromkeys(r["device"] for r in rows))
    batch = f"batch {batches[0]}" if len(batches) == 1 else "batches " + ", ".join(map(str, batches))
    title = f"AlexNet images/s on {devices}, {batch}" if rows else "AlexNet images/s: every row was skipped"
    bar_chart(path, labels, [r["images_per_s"] for r in rows], title=title, xlabel="images/s",
              groups=[PLOTTED[r["mode"]] for r in rows], notes=notes)
