"""Overlay figures: an image with truth, coarse and rendered labels and the re-predicted cells."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["class_colors", "gate_rgba", "label_rgba", "make_overlay_figure"]

_POINTS_RGBA = (1.0, 1.0, 0.0, 0.9)  # re-predicted cells: opaque yellow


def class_colors(num_classes: int) -> np.ndarray:
    """RGBA colours of labels ``0 .. num_classes-1``, shape (K, 4); row 0 (background) is
    fully transparent, the others distinct (tab10, then tab20's light shades, then hues).

    >>> c = class_colors(3)
    >>> c.shape, float(c[0, 3]), float(c[1, 3]), bool((c[1] != c[2]).any())
    ((3, 4), 0.0, 1.0, True)
    """
    from matplotlib import colormaps

    tab10 = colormaps["tab10"].colors
    tab20 = colormaps["tab20"].colors
    palette = list(tab10) + [tab20[i] for i in range(1, 20, 2)]
    n_fg = max(num_classes - 1, 0)
    if n_fg > len(palette):
        hsv = colormaps["hsv"](np.linspace(0, 1, n_fg - len(palette), endpoint=False))
        palette += [tuple(h[:3]) for h in hsv]
    colors = np.zeros((max(num_classes, 1), 4))
    for c in range(1, num_classes):
        colors[c, :3] = palette[c - 1][:3]
        colors[c, 3] = 1.0
    return colors


def label_rgba(labels: np.ndarray, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """RGBA overlay (H, W, 4) of an integer label map (H, W): class colours with opacity
    ``alpha``, background and out-of-range labels transparent."""
    labels = np.asarray(labels).astype(np.int64)
    colors = class_colors(num_classes)
    colors[1:, 3] = alpha
    safe = np.where((labels >= 0) & (labels < num_classes), labels, 0)
    return colors[safe]


def _display_range(image: np.ndarray) -> tuple[float, float]:
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def make_overlay_figure(
    image: np.ndarray,
    truth: np.ndarray | None = None,
    coarse: np.ndarray | None = None,
    rendered: np.ndarray | None = None,
    points: np.ndarray | None = None,
    gate: np.ndarray | None = None,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    alpha: float = 0.5,
):
    """One row of panels: image, then image + truth, + coarse, + rendered label overlays, and
    image + the rendered points (cells the renderer re-predicted, in yellow, over a faint
    rendered overlay).

    Args:
        image: (H, W) float slice, shown in grey with a robust 0.5-99.5 percentile window.
        truth, coarse, rendered: (H, W) integer label maps or ``None`` (panel left out).
        points: (H, W) bool mask or ``None`` (panel left out).
        gate: (H, W) uint8, the dominant expert of each re-predicted cell (0 none, s + 1
            scale s, coarsest first) or ``None`` (panel left out).
        num_classes: K labels for the colours; default: 1 + the largest label shown.
        class_names: names of labels 1..K-1 (or of all K, background first) for the legend.
        title: figure title, e.g. ``"case0001 slice 42"``.
        alpha: opacity of the label colours.

    Returns:
        A :class:`matplotlib.figure.Figure` (not attached to pyplot; save it or let it go).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    image = np.asarray(image, dtype=float)
    if image.ndim != 2:
        raise ValueError(f"image must be (H, W), got shape {image.shape}")
    overlays = [
        (n, a)
        for n, a in (("truth", truth), ("coarse", coarse), ("rendered", rendered))
        if a is not None
    ]
    for name, arr in [*overlays, ("points", points), ("gate", gate)]:
        if arr is not None and np.shape(arr) != image.shape:
            raise ValueError(f"{name} has shape {np.shape(arr)}, image has {image.shape}")
    if num_classes is None:
        num_classes = 1 + max([int(np.max(a)) for _, a in overlays if np.size(a)] + [1])
    n_panels = 1 + len(overlays) + (points is not None) + (gate is not None)
    fig = Figure(figsize=(2.6 * n_panels, 3.0), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    lo, hi = _display_range(image)
    panels = [
        ("image", None),
        *((f"+ {n}", label_rgba(a, num_classes, alpha)) for n, a in overlays),
    ]
    if points is not None:
        mask = np.asarray(points, dtype=bool)
        # the rendered labels faintly underneath, so the points can be placed on the anatomy
        under = rendered if rendered is not None else np.zeros(image.shape, dtype=np.int64)
        rgba = label_rgba(under, num_classes, alpha * 0.4)
        rgba[mask] = _POINTS_RGBA
        panels.append((f"re-predicted\n(n={int(mask.sum())})", rgba))
    if gate is not None:
        panels.append(("top expert per cell\n(scale 1 = coarsest)", gate_rgba(gate)))
    for ax, (name, rgba) in zip(axes, panels, strict=True):
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        if rgba is not None:
            ax.imshow(rgba, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    if gate is not None:
        axes[-1].legend(handles=_scale_handles(gate), loc="lower right", fontsize=7)
    names = _label_names(class_names, num_classes)
    colors = class_colors(num_classes)
    handles = [Patch(color=colors[c], label=names[c]) for c in range(1, num_classes)]
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=min(len(handles), 8),
            fontsize=8,
            frameon=False,
        )
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def gate_rgba(gate: np.ndarray) -> np.ndarray:
    """(H, W) dominant-expert map (0 none, s + 1 scale s) -> (H, W, 4): one fixed colour per
    scale (matplotlib's tab10, scale 1 = coarsest blue), cells not re-predicted transparent.

    >>> rgba = gate_rgba(np.array([[0, 1, 2]]))
    >>> rgba[0, 0, 3], rgba[0, 1, 3], bool((rgba[0, 1] != rgba[0, 2]).any())
    (np.float64(0.0), np.float64(0.9), True)
    """
    import matplotlib

    gate = np.asarray(gate, dtype=np.int64)
    out = np.zeros((*gate.shape, 4))
    shown = gate > 0
    out[shown] = matplotlib.colormaps["tab10"]((gate[shown] - 1) % 10)
    out[shown, 3] = 0.9
    return out


def _scale_handles(gate: np.ndarray) -> list:
    """Legend entries for the scales present in a dominant-expert map, coloured as drawn."""
    from matplotlib.patches import Patch

    scales = sorted(int(s) for s in np.unique(gate) if s > 0)
    return [Patch(color=gate_rgba(np.array([[s]]))[0, 0], label=f"scale {s}") for s in scales]


def _label_names(class_names: Sequence[str] | None, num_classes: int) -> dict[int, str]:
    """``{label: name}`` for labels 1..K-1 from K names (background first) or foreground
    names (labels beyond them are called ``"class c"``).

    >>> _label_names(["bg", "liver"], 2), _label_names(["liver"], 3)
    ({1: 'liver'}, {1: 'liver', 2: 'class 2'})
    """
    names = [str(n) for n in class_names or []]
    if len(names) >= num_classes:
        return {c: names[c] for c in range(1, num_classes)}
    return {c: names[c - 1] if c - 1 < len(names) else f"class {c}" for c in range(1, num_classes)}
