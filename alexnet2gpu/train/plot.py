"""Charts drawn with matplotlib on its Agg canvas, without pyplot: no global figure state, so drawing is safe
from any thread and never opens a window. Line charts of the training curves (report.save_curves) and the
bar chart of bench.py --plot. matplotlib is imported inside the functions, so importing the package stays fast."""
from __future__ import annotations

import math

from alexnet2gpu.files import atomic_write

DPI = 100
# Beyond this a value is drawn as off the chart: matplotlib's tick and margin arithmetic overflows near the
# float maximum (a diverged loss can get there).
LIMIT = 1e200


def figure(width: float, height: float, **subplots):
    """A figure of width x height inches and its axes (fig.subplots(**subplots)). The constrained layout keeps
    titles, labels, tick labels and legends from overlapping one another."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(**subplots)


def save(fig, path) -> None:
    """The figure as a PNG written whole or not at all (the temporary file's name has no .png, hence format)."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def number(v) -> float:
    """A float, or NaN for what is none (None, '' or a missing column of an older metrics row)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def fmt(v: float) -> str:
    """A value as a label: 4 significant digits, thousands whole (43,712 images/s), the rest in e-notation."""
    if math.isfinite(v) and 1e3 <= abs(v) < 1e7:
        return f"{v:,.0f}"
    return f"{v:.4g}" if v == 0 or math.isfinite(v) and 1e-3 <= abs(v) < 1e3 else f"{v:.3g}"


def drawable(v: float, log: bool = False) -> bool:
    return math.isfinite(v) and abs(v) < LIMIT and (v > 0 if log else True)


def line_chart(ax, xs: list, series: dict[str, list], title: str = "", ylabel: str = "", log: bool = False) -> None:
    """One line with markers per series ({name: ys}, one y per x) on the axes `ax`, its legend entry ending
    with the last value. A value that cannot be drawn (NaN, inf, past LIMIT, not positive on a log scale)
    leaves a gap and an x at the top of the axes. A series of a single point gets its value written beside
    it, so a one-epoch run reads as numbers rather than lone dots."""
    from matplotlib.ticker import MaxNLocator
    series = {name: [number(y) for y in ys] for name, ys in series.items()}
    shown = [y for ys in series.values() for y in ys if drawable(y)]
    log = log and bool(shown) and all(y > 0 for y in shown)
    if log:
        ax.set_yscale("log")
    marked = False
    for i, (name, ys) in enumerate(series.items()):
        colour = f"C{i}"
        good = [y if drawable(y, log) else math.nan for y in ys]
        bad = [x for x, y in zip(xs, ys) if not drawable(y, log)]
        label = f"{name}: {fmt(ys[-1])}" if ys else name
        ax.plot(xs, good, marker="o", markersize=5 if len(xs) < 30 else 3, color=colour, label=label)
        if bad:  # just under the top edge: x in data units, y in axes units (0 bottom, 1 top)
            ax.plot(bad, [0.96] * len(bad), marker="x", markersize=8, linestyle="none", color=colour,
                    transform=ax.get_xaxis_transform())
            marked = True
        points = [(x, y) for x, y in zip(xs, good) if not math.isnan(y)]
        if len(points) == 1:
            # Right of the marker, the series' labels 12 points apart: equal values stay readable.
            ax.annotate(fmt(points[0][1]), points[0], xytext=(9, 6 * (len(series) - 1) - 12 * i),
                        textcoords="offset points", va="center", color=colour)
            ax.margins(y=0.15)
    if series:
        from matplotlib.lines import Line2D
        handles, names = ax.get_legend_handles_labels()
        if marked:
            handles.append(Line2D([], [], marker="x", linestyle="none", color="grey"))
            names.append("x: NaN, inf or off the scale")
        ax.legend(handles, names, fontsize="small")
    else:
        ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", va="center", color="grey")
    if xs:
        pad = max(0.5, 0.03 * (max(xs) - min(xs)))
        ax.set_xlim(min(xs) - pad, max(xs) + pad)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # epochs are whole numbers, one too
    ax.set_title(title)
    ax.set_ylabel(ylabel + (" (log scale)" if log else ""))
    ax.grid(True, alpha=0.3)


def bar_chart(path, labels: list[str], values: list[float], title: str = "", xlabel: str = "",
              groups: list[str] | None = None, notes: list[str] | None = None):
    """A PNG of horizontal bars, one per label, top to bottom in the given order, each with its value (and
    its note) written at its end. `groups` (one name per bar, e.g. the mode, which the labels also say)
    colours the bars by group. A value that cannot be drawn gets no bar and the words "not measured".
    Returns the figure."""
    n = len(labels)
    fig, ax = figure(9, 1.4 + 0.32 * max(n, 3))
    values = [number(v) for v in values]
    names = list(dict.fromkeys(groups or []))
    colours = [f"C{names.index(g)}" for g in groups] if groups else ["C0"] * n
    widths = [v if drawable(v) else 0.0 for v in values]
    bars = ax.barh(range(n), widths, color=colours)
    texts = [(fmt(v) if drawable(v) else "not measured") + (f"  {notes[i]}" if notes and notes[i] else "")
             for i, v in enumerate(values)]
    ax.bar_label(bars, labels=texts, padding=3, fontsize="small")
    ax.set_yticks(range(n), labels)
    ax.invert_yaxis()  # the first label on top, as in the table bench.py prints
    ax.margins(x=0.3)  # room for the value labels
    ax.set_xlim(left=0)
    if not n:
        ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", va="center", color="grey")
        ax.set_xticks([])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.grid(True, axis="x", alpha=0.3)
    save(fig, path)
    return fig
