"""``paired_differences.png``: each variant minus plain, a dot per (seed, class) pair.

One panel per metric; along x the foreground classes and, last, "mean" with the mean and its
95% interval (the seeds x cases bootstrap of :func:`morse.experiments.stats.cluster_bootstrap`);
one colour per variant, dots offset so variants sit side by side.
"""

from __future__ import annotations

from pathlib import Path

from morse.evaluation.tables import metric_header
from morse.io import atomic_open

__all__ = ["plot_paired_differences"]


def plot_paired_differences(comparison: dict, path: Path) -> Path:
    """Draw ``comparison["paired"]`` (see :func:`morse.experiments.results.build_comparison`)
    into one PNG; the figure has no pyplot state, so nothing stays open."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    metrics, paired = comparison["metrics"], comparison["paired"]
    classes = list(comparison["class_names"])
    columns = min(3, len(metrics))
    rows = -(-len(metrics) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    width = 0.7 / max(len(paired), 1)
    for ax, metric in zip(axes, metrics):
        for index, (variant, by_metric) in enumerate(paired.items()):
            offset = (index - (len(paired) - 1) / 2) * width
            _draw_variant(ax, by_metric[metric], classes, offset, f"C{index}", variant)
        ax.axhline(0.0, color="0.5", linewidth=0.8)
        ax.set_xticks(range(len(classes) + 1), [*classes, "mean"], rotation=45, ha="right")
        ax.set_title(f"{metric_header(metric, comparison['distance_unit'])}: variant − plain",
                     fontsize=9)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    if paired:
        axes[0].legend(fontsize=7)
    figure.suptitle(f"Paired differences to plain ({comparison['subset']} subset; "
                    "dots: (seed, class); bars: seeds x cases bootstrap 95% interval)", fontsize=10)
    with atomic_open(path) as handle:
        figure.savefig(handle, format="png", dpi=110)
    return path


def _draw_variant(ax, stats: dict, classes: list[str], offset: float, colour: str,
                  label: str) -> None:
    """Dots per (seed, class), and the mean with its interval at the end."""
    xs = [classes.index(p["class"]) + offset for p in stats["pairs"]]
    ax.scatter(xs, [p["difference"] for p in stats["pairs"]], s=14, color=colour, alpha=0.7,
               label=label)
    mean, (low, high) = stats["mean"], stats["ci95"]
    ax.errorbar([len(classes) + offset], [mean], yerr=[[mean - low], [high - mean]],
                fmt="D", color=colour, capsize=3, markersize=5)
