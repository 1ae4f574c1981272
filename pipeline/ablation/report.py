"""summary.md laid out like Table 3 of Köpüklü et al., and accuracy_vs_macs.png.

Table 3 has one row per head with its MFLOPs and parameters, then one accuracy column per setting
(dataset, segments, backbone). Here the columns are the grid's settings (segments x modality) on one
store, and a cell is the mean ± sample standard deviation of val top-1 over the seeds. Parameters and
MFLOPs follow Table 3's convention: the head without the input projection (TSN is "free"), per clip,
MFLOPs = 2 x multiply-adds; they are read at the head's first single-stream setting of the grid
(the MLP and TRN grow with the segment count; late rgb+flow fusion doubles them). The plot's x axis
is the trial's whole cost, projection included (`macs` in results.csv), so TSN has a point too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.ablation.grid import Skipped


@dataclass
class Cell:
    mean: float
    std: float
    runs: int  # seeds that finished
    seeds: int  # seeds in the grid
    macs: float
    collapsed: int = 0  # seeds that finished but did not train: left out of mean and std, marked


def row_setting(row: dict[str, Any]) -> tuple:
    """(segments, modality), plus the hyper-parameter grid point when the ablation swept one."""
    grid = row.get("grid") or ""
    return (int(row["segments"]), row["modality"]) + ((str(grid),) if grid else ())


def setting_text(setting: tuple) -> str:
    return " ".join([f"{setting[0]} seg. {setting[1]}", *setting[2:]])


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, tuple], Cell]:
    """{(head, setting): Cell} over the seeds of each setting (top-1 in %); a setting is
    (segments, modality[, grid point])."""
    groups: dict[tuple[str, tuple], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["head"], row_setting(row)), []).append(row)
    cells = {}
    for key, group in groups.items():
        ok = [r for r in group if r["status"] == "ok" and r["val_top1"] not in (None, "")]
        collapsed = [r for r in ok if is_collapsed(r)]
        ok = [r for r in ok if not is_collapsed(r)]
        top1 = np.array([float(r["val_top1"]) * 100 for r in ok])
        macs = np.array([float(r["macs"]) for r in ok if r["macs"] not in (None, "")])
        cells[key] = Cell(mean=float(top1.mean()) if len(top1) else float("nan"),
                          std=float(top1.std(ddof=1)) if len(top1) > 1 else 0.0,
                          runs=len(ok), seeds=len(group), macs=float(macs.mean()) if len(macs) else float("nan"),
                          collapsed=len(collapsed))
    return cells


def is_collapsed(row: dict[str, Any]) -> bool:
    return row.get("status") == "ok" and bool(row.get("collapsed"))


def _reference(rows: Sequence[dict[str, Any]], head: str, settings: list[tuple]) -> dict | None:
    ok = [r for r in rows if r["head"] == head and r["status"] == "ok" and r["head_params"] not in (None, "")]
    order = {s: i for i, s in enumerate(settings)}
    ok.sort(key=lambda r: ("+" in r["modality"], order.get(row_setting(r), 0)))
    return ok[0] if ok else None


def summary_markdown(rows: Sequence[dict[str, Any]], *, heads: list[str], settings: list[tuple],
                     skipped: Sequence[Skipped] = (), title: str = "", val_split: str = "val",
                     seeds: Sequence[int] = ()) -> str:
    cells = aggregate(rows)
    best = {s: max((c.mean for (h, s2), c in cells.items() if s2 == s and c.runs), default=None) for s in settings}
    header = ["Model", "MFLOPs", "Params"] + [setting_text(s) for s in settings]
    lines = [f"# {title or 'Ablation'}", "",
             f"Top-1 accuracy (%) on `{val_split}`, mean ± std over seeds {', '.join(map(str, seeds))}; "
             "**bold** = best in its column.", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    notes = []
    for head in heads:
        ref = _reference(rows, head, settings)
        if ref is not None:
            mflops, params = f"{2 * float(ref['head_macs']) / 1e6:.3g}", _millions(float(ref["head_params"]))
            if row_setting(ref) != settings[0]:
                notes.append(f"{head}: MFLOPs and params at {ref['segments']} segments, {ref['modality']}")
        else:
            mflops = params = "–"
        row = [head, mflops, params]
        for setting in settings:
            cell = cells.get((head, setting))
            row.append(_cell_text(cell, best[setting]))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "MFLOPs = 2 x multiply-adds and Params of the head per clip without its input projection "
              "(Table 3's convention); the plot and results.csv count the projection too."]
    lines += [f"- {n}" for n in notes]
    lines += best_grid_points(cells, heads, settings)
    collapsed = [r for r in rows if is_collapsed(r)]
    if collapsed:
        lines += ["", "## Collapsed trials (did not train: left out of the means; see each run's metrics.json notes)", ""]
        lines += [f"- {_trial_name(r)}: val top-1 {float(r['val_top1']) * 100:.1f}" for r in collapsed]
    failed = [r for r in rows if r["status"] == "failed"]
    pending = [r for r in rows if r["status"] not in ("ok", "failed")]
    if failed:
        lines += ["", "## Failed trials (after a retry)", ""]
        lines += [f"- {_trial_name(r)}: {r.get('error') or 'unknown error'}" for r in failed]
    if pending:
        lines += ["", f"## Not run yet ({len(pending)} trials; re-run the same command to continue)"]
    if skipped:
        lines += ["", "## Left out", ""]
        whole = [s for s in skipped if s.setting is None]
        partial = [s for s in skipped if s.setting is not None]
        lines += [f"- {s.head}: {s.reason}" for s in whole]
        lines += [f"- {s.head} at {s.setting[0]} seg. {s.setting[1]}: {s.reason}" for s in partial]
    return "\n".join(lines) + "\n"


def best_grid_points(cells: dict[tuple[str, tuple], Cell], heads: list[str], settings: list[tuple]) -> list[str]:
    """With a hyper-parameter grid: per head and (segments, modality), the grid point of the best mean."""
    if not any(len(s) > 2 for s in settings):
        return []
    lines = ["", "## Best grid point per head (mean val top-1 over the seeds)", ""]
    for head in heads:
        for base in dict.fromkeys(s[:2] for s in settings):
            done = [(cells[(head, s)], s) for s in settings if s[:2] == base and (head, s) in cells
                    and cells[(head, s)].runs]
            if done:
                cell, best = max(done, key=lambda item: item[0].mean)
                lines.append(f"- {head}, {setting_text(base)}: {' '.join(best[2:])} -> "
                             f"{cell.mean:.1f} ± {cell.std:.1f}")
    return lines


def _cell_text(cell: Cell | None, best: float | None) -> str:
    if cell is None:
        return "–"  # the head does not take this setting (see "Left out")
    if not cell.runs:
        return "collapsed" if cell.collapsed else "failed"
    text = f"{cell.mean:.1f} ± {cell.std:.1f}"
    if best is not None and cell.mean >= best - 1e-9:
        text = f"**{text}**"
    if cell.runs < cell.seeds:
        text += f" ({cell.runs}/{cell.seeds} seeds"
        text += f", {cell.collapsed} collapsed)" if cell.collapsed else ")"
    return text


def _millions(value: float) -> str:
    return f"{value / 1e6:.2f}M"


def _trial_name(row: dict[str, Any]) -> str:
    return f"{row['head']} {setting_text(row_setting(row))} seed {row['seed']}"


def plot_accuracy_vs_macs(rows: Sequence[dict[str, Any]], path: str | Path, *, settings: list[tuple],
                          title: str = "") -> Path:
    """Log-scale multiply-adds per clip vs top-1 (%): one labelled point per head and setting,
    error bars = std over seeds, one marker and colour per setting (labels: `place_labels`)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    cells = aggregate(rows)
    fig, ax = plt.subplots(figsize=(9, 6))
    labels: list[tuple[str, tuple[float, float], float]] = []
    markers = "os^Dvp*hX<>"
    for i, setting in enumerate(settings):
        points = [(head, c) for (head, s), c in cells.items() if s == setting and c.runs and c.macs > 0]
        if not points:
            continue
        xs = [c.macs for _, c in points]
        ys = [c.mean for _, c in points]
        errs = [c.std for _, c in points]
        ax.errorbar(xs, ys, yerr=errs, fmt=markers[i % len(markers)], capsize=3, markersize=6,
                    label=setting_text(setting), alpha=0.85)
        labels += [(head, (x, y), err) for (head, _), x, y, err in zip(points, xs, ys, errs)]
    ax.set_xscale("log")
    ax.set(xlabel="multiply-adds per clip (head incl. projection, log scale)", ylabel="val top-1 (%)",
           title=title or "accuracy vs. cost")
    ax.grid(alpha=0.3, which="both")
    if settings:
        ax.legend(fontsize=8)
    fig.tight_layout()
    place_labels(ax, labels)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def place_labels(ax, labels: Sequence[tuple[str, tuple[float, float], float]], *, fontsize: float = 7) -> list:
    """Write each text beside its point (text, (x, y), error bar's half height) in the first place
    where it covers no other label, no point, no error bar and not the legend: right or left of the
    point, at its height or the nearest free one above or below (neighbouring heads often cost the
    same MACs and score alike). A label moved off its point's height gets a thin line to it. Call once
    the axes' limits and layout are final. Returns the annotations."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    per_point = fig.dpi / 72  # pixels
    mark, air = 4 * per_point, 1 * per_point  # half a marker (markersize 6) and air; between boxes
    taken = []  # (x0, y0, x1, y1) in pixels: every point with its error bar, then each placed label
    for _, point, err in labels:
        (x, y), (_, top) = ax.transData.transform([point, (point[0], point[1] + err)])
        half = max(mark, top - y)
        taken.append((x - mark, y - half, x + mark, y + half))
    if ax.get_legend() is not None:
        taken.append(tuple(ax.get_legend().get_window_extent(renderer).extents))
    frame = ax.get_window_extent(renderer)

    def free(box: tuple[float, float, float, float]) -> bool:
        inside = frame.x0 <= box[0] and box[2] <= frame.x1 and frame.y0 <= box[1] and box[3] <= frame.y1
        return inside and not any(box[0] < b[2] + air and b[0] < box[2] + air and box[1] < b[3] + air
                                  and b[1] < box[3] + air for b in taken)

    steps = [0] + [s for k in range(1, 21) for s in (k, -k)]  # half label heights: 0, +1, -1, +2, ...
    placed = []
    for text, point, _ in labels:
        probe = ax.annotate(text, point, textcoords="offset points", xytext=(5, 0), va="center", fontsize=fontsize)
        box = probe.get_window_extent(renderer)
        probe.remove()
        x, y = ax.transData.transform(point)
        width, height, gap = box.width, box.height, 5 * per_point
        places = [(side, step * height / 2) for step in steps for side in (1, -1)]  # right of the point, then left
        for side, dy in places:
            x0 = x + gap if side > 0 else x - gap - width
            candidate = (x0, y + dy - height / 2, x0 + width, y + dy + height / 2)
            if free(candidate):
                break
        else:
            side, dy = places[0]
            candidate = (x + gap, y - height / 2, x + gap + width, y + height / 2)
        taken.append(candidate)
        line = dict(arrowstyle="-", color="grey", lw=0.5, shrinkA=0, shrinkB=3) if abs(dy) > height / 2 else None
        placed.append(ax.annotate(text, point, textcoords="offset points", xytext=(side * 5, dy / per_point),
                                  va="center", ha="left" if side > 0 else "right", fontsize=fontsize,
                                  arrowprops=line))
    return placed
