"""Write a :class:`BenchmarkReport` to a folder: JSON, a Markdown table and PNG plots.

matplotlib (Agg backend) is imported inside :func:`write_plots` only, so the CLI starts fast.
Files: ``results.json``, ``table.md``, ``topk.png`` (top-k accuracy curve per method),
``confusion-<method>.png`` (true model x top-1 prediction, A.6), ``gamma-sweep.png`` (A.7).
Plots of an earlier report in the same folder that this one does not write (all of them with
``plots=False``) are removed, so the folder never shows plots of other results.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from gmi_desktop.evaluation.benchmark import BenchmarkReport, display_name, markdown_table
from gmi_desktop.store.atomic import atomic_write_bytes


def _file_slug(method: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", method.lower()).strip("-")


def write_report(report: BenchmarkReport, out_dir: str | Path, title: str = "", plots: bool = True) -> list[Path]:
    """Write every output file atomically; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    data = json.dumps(report.to_dict(), indent=1, allow_nan=False) + "\n"
    atomic_write_bytes(out / "results.json", data.encode("utf-8"))
    written.append(out / "results.json")
    atomic_write_bytes(out / "table.md", markdown_table(report, title).encode("utf-8"))
    written.append(out / "table.md")
    if plots:
        written += write_plots(report, out)
    remove_stale_plots(out, keep=written)
    return written


def remove_report(out: Path) -> list[Path]:
    """Delete every file a report writes from ``out`` (results of another benchmark)."""
    gone = [p for p in (out / "results.json", out / "table.md") if p.is_file()]
    for path in gone:
        path.unlink()
    return gone + remove_stale_plots(out)


def remove_stale_plots(out: Path, keep: list[Path] = ()) -> list[Path]:
    """Delete the report plots in ``out`` (``topk.png``, ``gamma-sweep.png``, ``confusion-*.png``)
    that are not in ``keep``; returns what was removed."""
    kept = {p.name for p in keep}
    stale = [p for p in (out / "topk.png", out / "gamma-sweep.png", *sorted(out.glob("confusion-*.png")))
             if p.name not in kept and p.is_file()]
    for path in stale:
        path.unlink()
    return stale


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def write_plots(report: BenchmarkReport, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter

    paths = []
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for r in report.results:
        ks = sorted(r.topk)
        ax.plot(ks, [r.topk[k] for k in ks], marker="o", label=display_name(r.method))
    ax.set(xlabel="k", ylabel="Top-k accuracy", ylim=(0, 1.02), title="Top-k accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "topk.png"))

    for r in report.results:
        fig = Figure(figsize=(5.2, 4.6))
        ax = fig.add_subplot()
        image = ax.imshow(r.confusion, cmap="Blues")
        ax.set(xlabel="predicted model (top-1)", ylabel="true model",
               title=f"{display_name(r.method)}: top-1 {r.top1:.3f}")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(nbins=min(r.n_models, 16), integer=True))
        fig.colorbar(image, ax=ax, label="queries")
        paths.append(_save(fig, out / f"confusion-{_file_slug(r.method)}.png"))

    if report.sweeps:
        fig = Figure(figsize=(6.4, 4.2))
        ax = fig.add_subplot()
        for method, points in report.sweeps.items():
            ax.plot([p.gamma for p in points], [p.top1 for p in points], marker="o", label=display_name(method))
        ax.axvline(report.gamma, color="grey", linestyle=":", label=f"gamma = {report.gamma:g}")
        ax.set(xscale="log", xlabel="gamma", ylabel="Top-1 accuracy", title="Gamma sweep", ylim=(0, 1.02))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / "gamma-sweep.png"))
    return paths
