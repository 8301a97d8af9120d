"""What a benchmark prints and writes: the load warning, the table, the speed goals, JSON records and a bar chart.

A goal is "not judged", with the reason, where its figure cannot say met or not: one of its rows was skipped
or measured only at another batch size, other work shared the cores during the run, or a %matmul figure is
over 100 % where no hardware explains it.
"""
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


TF32_NOTE = ("fp32 rows over 100 % of matmul on CUDA: cuDNN runs fp32 convolutions in TF32, the fp32 matmul "
             "does not.")
OVER_MATMUL_NOTE = ("* over 100 % of matmul: no step of this network outruns the matrix multiply, so that row was "
                    "disturbed (other work, clock changes) or the counts differ; the figure says nothing of the "
                    "hardware.")


def over_matmul(r: dict) -> bool:
    """A %matmul figure over 100 % that nothing explains (on CUDA an fp32 row may: TF32_NOTE)."""
    if r["mode"] in ("matmul", "skipped", "load") or r["peak_fraction"] <= 1.0:
        return False
    return not (r.get("device_type") == "cuda" and r.get("dtype", "float32") == "float32")


def _busiest(records: list[dict]) -> dict | None:
    """The load reading with the most other work, where the run's `load` says other work shared the cores."""
    load = next((r["load"] for r in records if r.get("load")), {})
    return max(load["readings"], key=lambda r: r["others"]) if load.get("shared") else None


def load_warning(records: list[dict]) -> str:
    """One line saying what other work was seen on the cores during the run and what it means ("" if none)."""
    worst = _busiest(records)
    if worst is None:
        return ""
    return (f"warning: other work shared the cores: 1-minute load average {worst['load_1min']:.2f} on "
            f"{worst['machine_cores']} cores {worst['when']}, {worst['others']:.2f} more than bench's own "
            f"{worst['bench_threads']} thread(s) account for. Ratios between one-process rows (timed round-robin) "
            "still compare; ms/step, img/s, GFLOP/s, %matmul and the rows timed apart are unreliable, and no speed "
            "goal is judged.")


def table(records: list[dict]) -> str:
    """One line per row, grouped by batch size, with images/s relative to `merged` of the same batch and mode,
    and a footnote under a %matmul figure over 100 %."""
    head = (f"{'variant':22s} {'mode':6s} {'batch':>5s} {'procs':>5s} {'ms/step':>9s} {'img/s':>8s} {'vs merged':>9s} "
            f"{'GFLOP/s':>8s} {'%matmul':>7s} {'peak MB':>11s} {'exch MB':>8s}  note")
    lines = [head, "-" * len(head)]
    base = {(r["batch_size"], r["mode"]): r["images_per_s"] for r in records if r["variant"] == "merged"}
    notes = set()
    for r in records:
        if r["mode"] == "skipped":
            lines.append(f"{r['variant']:22s} {'-':6s} {r['batch_size']:5d} {'':>5s} skipped: {r['note']}")
            continue
        # The loader row is compared with the training step it has to feed.
        ref = base.get((r["batch_size"], "train" if r["mode"] == "load" else r["mode"]))
        vs = f"{r['images_per_s'] / ref:.3f}x" if ref and r["mode"] != "matmul" else ""
        img = f"{r['images_per_s']:.1f}" if r["mode"] != "matmul" else ""
        procs = f"{r['processes']}x{r['threads']}"
        star = "*" if over_matmul(r) else " "  # in the blank after "%": the columns stay where they were
        if r["mode"] != "matmul" and r["peak_fraction"] > 1.0:
            notes.add(OVER_MATMUL_NOTE if over_matmul(r) else TF32_NOTE)
        lines.append(f"{r['variant']:22s} {r['mode']:6s} {r['batch_size']:5d} {procs:>5s} {r['ms_per_step']:9.1f} "
                     f"{img:>8s} {vs:>9s} {r['gflops']:8.1f} {100 * r['peak_fraction']:6.1f}%{star}"
                     f"{_fmt_mem(r['peak_memory_mb']):>11s} {r['exchange_mb']:8.1f}  {r.get('note', '')}")
    return "\n".join(lines + sorted(notes, reverse=True))


def goals(records: list[dict]) -> list[dict]:
    """The speed goals of the records' device type at each batch size where their rows were measured or
    skipped. `judged` False (and `met` None) where the figure cannot decide: `reason` says why."""
    out = []
    train = {(r["batch_size"], r["variant"]): r for r in records if r["mode"] == "train"}
    skipped = {(r["batch_size"], r["variant"]): r.get("note", "") for r in records if r["mode"] == "skipped"
               and not r.get("note", "").startswith("infer failed")}  # the training row may still have run
    device_type = next((r.get("device_type") for r in records if r.get("device_type")), "cpu")
    worst = _busiest(records)
    busy = f"other work shared the cores (load {worst['load_1min']:.2f} on {worst['machine_cores']} cores)" \
        if worst else ""

    def missing(row: str, batch: int) -> str:
        if (batch, row) in skipped:
            return f"{row} was skipped ({skipped[(batch, row)]})"
        elsewhere = sorted(b for b, v in train if v == row)
        if elsewhere:
            batches = ", ".join(map(str, elsewhere))
            return f"{row} was measured at batch {batches} only, and a ratio needs one batch size"
        return ""  # not asked for: no goal, as when the row is left out

    for batch in sorted({b for b, _ in train} | {b for b, _ in skipped}):
        for name, num, den, threshold, what in GOALS.get(device_type, ()):
            absent = [row for row in (num, den) if row and (batch, row) not in train]
            reasons = [missing(row, batch) for row in absent]
            if not all(reasons):
                continue
            value = None
            if not absent:
                top = train[(batch, num)]
                value = top["images_per_s"] / train[(batch, den)]["images_per_s"] if den else top["peak_fraction"]
                if not den and not value:
                    reasons.append("no matrix-multiply rate was measured")
                elif not den and over_matmul(top):
                    reasons.append(f"{num} ran at {100 * value:.0f} % of the matrix multiply, faster than the "
                                   "reference it is measured against")
                reasons += [busy] if busy else []
            judged = not reasons
            out.append({"goal": name, "batch_size": batch, "value": value, "threshold": threshold, "what": what,
                        "met": value >= threshold if judged else None, "judged": judged, "reason": "; ".join(reasons)})
    return out


def goals_text(results: list[dict]) -> str:
    lines = ["speed goals (training, ratios within this run):"]
    for g in results:
        value = "-" if g["value"] is None else f"{g['value']:.3f}"
        verdict = ("met" if g["met"] else "NOT MET") if g.get("judged", True) else f"not judged: {g['reason']}"
        lines.append(f"  batch {g['batch_size']:4d}  {g['goal']:45s} {value:>6s}  (goal >= {g['threshold']:.2f})  "
                     f"{verdict}")
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
