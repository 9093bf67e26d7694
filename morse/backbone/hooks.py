"""Feature taps: turn any logits-only segmentation network into a MORSE backbone.

MORSE needs, besides a backbone's coarse logits, its decoder feature maps at several
scales.  :class:`FeatureTap` wraps an arbitrary ``nn.Module`` that returns only logits,
registers forward hooks on named submodules and returns ``(logits, features)`` - the
backbone contract of :mod:`morse.backbone`:

* ``logits``: ``(B, K, *spatial)`` at the input's resolution;
* ``features``: list of ``S`` tensors ``(B, c_s, *spatial_s)``, coarsest first;
* attributes ``feature_channels``, ``feature_strides`` (an int per map, or a tuple of
  per-axis ints where the map is down-sampled anisotropically), ``spatial_dims``,
  ``in_channels``, ``num_classes``.

Design notes on the capture store (the part that is easy to get wrong):

* hooks are registered once, at construction, as picklable callables that write into
  a per-thread stack of dictionaries owned by the tap.  A fresh dictionary is pushed at
  the start of every :meth:`FeatureTap.forward` and popped in a ``finally`` - nothing
  survives a call, a failed call cannot leave stale features, and hooks firing outside
  a tapped forward (the bare ``net`` called directly, gradient-checkpoint recomputation
  during backward) are ignored;
* the stack is thread-local, so ``nn.DataParallel`` replicas (which share the hook
  dictionaries of the original submodules and run in one thread per device) never see
  each other's features;
* ``copy.deepcopy`` (EMA / mean-teacher copies) and pickling give the copy its own,
  empty store, and its hooks write into that store, not the original's.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

from morse.backbone.capture import CaptureHook, CaptureState, tensor_version
from morse.backbone.checks import check_image, first_logits

__all__ = ["FeatureTap", "Stride"]

Stride = int | tuple[int, ...]
"""A feature map's down-sampling factor: one int for every axis, or one int per axis."""


# ----------------------------------------------------------------------------- the tap
def _resolve_module(net: nn.Module, name: str) -> nn.Module:
    """``net.get_submodule(name)`` with an error listing close / available names."""
    try:
        return net.get_submodule(name)
    except AttributeError:
        pass
    names = [n for n, _ in net.named_modules(remove_duplicate=False) if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    hint = ""
    if f"module.{name}" in names:
        hint = f" The network looks wrapped (DataParallel/DDP): try 'module.{name}'."
    elif name.startswith("module.") and name[len("module.") :] in names:
        hint = f" The network is not wrapped: try '{name[len('module.') :]}'."
    top = [n for n, _ in net.named_children()]
    raise ValueError(
        f"FeatureTap: no submodule named '{name}' in {type(net).__name__}."
        f"{hint} Close matches: {close or 'none'}. Top-level modules: {top}. "
        "Use the dotted names of net.named_modules()."
    )


class FeatureTap(nn.Module):
    """Wrap a logits-only network so that it returns ``(logits, features)``.

    Args:
        net: any network; ``net(image)`` returns logits ``(B, K, *spatial)`` at the input
            resolution, or a list/tuple whose first entry is that (deep supervision).
        feature_modules: dotted submodule names (as in ``net.named_modules()``) whose
            outputs are the features. Features are returned in this order, so list them
            COARSEST FIRST (lowest resolution first).  A module that returns a tuple
            contributes its first tensor; a module run twice in one forward contributes
            its last output.
        feature_channels: channels of each tapped output; inferred by the probe when
            ``None``.
        probe_input: an example image ``(B, C_in, *spatial)``; when given, one no-grad
            forward in eval mode (training flags are restored afterwards) infers/validates
            ``feature_channels``, ``feature_strides``, ``in_channels`` and ``num_classes``.
        spatial_dims: 2 or 3; defaults to ``probe_input.ndim - 2``, else ``net.spatial_dims``,
            else the rank of the first image seen.
        feature_strides: down-sampling factor of each tapped output vs the input, an int
            (the same on every axis) or one int per axis (e.g. ``(1, 2, 2)`` for nnU-Net's
            anisotropic stages); inferred by the probe, else taken from this argument, else
            recorded at the first forward (``None`` until then).
        size_multiple: every input spatial size must be a multiple of this (checked up
            front with a clear message), int or per axis.
        required_size: the exact spatial size the network accepts, if it has one.
        logits_fn: how to get the logits out of ``net``'s output; default
            :func:`first_logits`.
        in_channels: expected input channels; default from the probe or ``net``.
        num_classes: number of classes ``K``; default from the probe or ``net``.
        name: network name used in error messages.

    Shapes: ``forward(image (B, C_in, *spatial)) -> (logits (B, K, *spatial),
    [ (B, c_s, *spatial / stride_s) for each tapped module ])``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2),
        ...                     nn.Upsample(scale_factor=2), nn.Conv2d(4, 3, 1))
        >>> tap = FeatureTap(net, ["1", "2"], probe_input=torch.zeros(1, 1, 8, 8))
        >>> tap.feature_channels, tap.feature_strides, tap.num_classes
        ([4, 4], [2, 1], 3)
        >>> logits, feats = tap(torch.randn(2, 1, 16, 16))
        >>> tuple(logits.shape), [tuple(f.shape) for f in feats]
        ((2, 3, 16, 16), [(2, 4, 8, 8), (2, 4, 16, 16)])
    """

    def __init__(
        self,
        net: nn.Module,
        feature_modules: Sequence[str],
        feature_channels: Sequence[int] | None = None,
        probe_input: torch.Tensor | None = None,
        spatial_dims: int | None = None,
        *,
        feature_strides: Sequence[Stride] | None = None,
        size_multiple: int | Sequence[int] = 1,
        required_size: Sequence[int] | None = None,
        logits_fn: Callable[[Any], torch.Tensor] | None = None,
        in_channels: int | None = None,
        num_classes: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(feature_modules, str):
            raise TypeError("feature_modules must be a sequence of names, not one string")
        names = [str(n) for n in feature_modules]
        if not names:
            raise ValueError("FeatureTap needs at least one module name in feature_modules")
        if len(set(names)) != len(names):
            raise ValueError(f"feature_modules has duplicates: {names}")
        if feature_channels is None and probe_input is None:
            raise ValueError(
                "FeatureTap cannot tell the feature channels: pass feature_channels=[...] "
                "or probe_input=<example image (B, C_in, *spatial)> to infer them"
            )
        if feature_channels is not None and len(feature_channels) != len(names):
            raise ValueError(
                f"feature_channels has {len(feature_channels)} entries for "
                f"{len(names)} feature_modules"
            )
        if feature_strides is not None and len(feature_strides) != len(names):
            raise ValueError(
                f"feature_strides has {len(feature_strides)} entries for "
                f"{len(names)} feature_modules"
            )

        self.net = net
        self.name = name or type(net).__name__
        self.feature_modules: list[str] = names
        self.logits_fn: Callable[[Any], torch.Tensor] = logits_fn or first_logits
        self.size_multiple = size_multiple
        self.required_size = tuple(required_size) if required_size is not None else None

        if spatial_dims is None:
            if probe_input is not None:
                spatial_dims = probe_input.ndim - 2
            else:
                spatial_dims = getattr(net, "spatial_dims", None)
        # None only without probe and without net.spatial_dims: set by the first forward
        self.spatial_dims: int | None = int(spatial_dims) if spatial_dims is not None else None
        self.in_channels: int | None = in_channels or _net_attr(net, "in_channels", "in_chans")
        if self.in_channels is None and probe_input is not None:
            self.in_channels = int(probe_input.shape[1])
        self.num_classes: int | None = num_classes or _net_attr(
            net, "num_classes", "out_channels", "n_classes"
        )
        self.feature_channels: list[int] | None = (
            [int(c) for c in feature_channels] if feature_channels is not None else None
        )
        self.feature_strides: list[Stride] | None = (
            [_normalise_stride(s) for s in feature_strides]
            if feature_strides is not None else None
        )

        self._state = CaptureState()
        self._handles = [
            _resolve_module(net, n).register_forward_hook(CaptureHook(n, self._state))
            for n in names
        ]
        if probe_input is not None:
            self._probe(probe_input)

    # -- public API -------------------------------------------------------------------
    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``image (B, C_in, *spatial)`` -> ``(logits (B, K, *spatial), features)``."""
        if self.spatial_dims is None and isinstance(image, torch.Tensor) and image.ndim > 2:
            self.spatial_dims = image.ndim - 2
        check_image(
            image,
            spatial_dims=self.spatial_dims or 0,
            in_channels=self.in_channels,
            size_multiple=self.size_multiple,
            required_size=self.required_size,
            name=self.name,
        )
        logits, features = self._run(image)
        self._check_outputs(image, logits, features)
        return logits, features

    def remove(self) -> None:
        """Take the hooks off ``net`` (the tap cannot be called afterwards)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def active_captures(self) -> int:
        """Captures held by the calling thread right now; 0 outside a forward."""
        return self._state.depth()

    def extra_repr(self) -> str:
        return (
            f"feature_modules={self.feature_modules}, feature_channels={self.feature_channels}, "
            f"feature_strides={self.feature_strides}"
        )

    # -- internals --------------------------------------------------------------------
    def _run(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not self._handles:
            raise RuntimeError("FeatureTap.remove() was called; the hooks are gone")
        store = self._state.push()
        try:
            logits = self.logits_fn(self.net(image))
            missing = [n for n in self.feature_modules if n not in store]
            if missing:
                raise RuntimeError(
                    f"FeatureTap: modules {missing} did not run during {self.name}'s forward; "
                    "tap modules on the path from the input to the logits"
                )
            features = []
            for n in self.feature_modules:
                tensor, version = store[n]
                if version >= 0 and tensor_version(tensor) != version:
                    raise RuntimeError(
                        f"FeatureTap: the output of '{n}' was modified in place after it was "
                        "captured (e.g. by an inplace activation); tap another module"
                    )
                features.append(tensor)
        finally:
            self._state.pop(store)
        return logits, features

    @torch.no_grad()
    def _probe(self, probe_input: torch.Tensor) -> None:
        """One eval-mode no-grad forward to infer/validate channels and strides."""
        param = next(self.net.parameters(), None)
        if param is not None:
            probe_input = probe_input.to(device=param.device, dtype=param.dtype)
        check_image(
            probe_input,
            spatial_dims=self.spatial_dims,
            in_channels=self.in_channels,
            size_multiple=self.size_multiple,
            required_size=self.required_size,
            name=f"{self.name} (probe_input)",
        )
        flags = {m: m.training for m in self.net.modules()}
        self.net.eval()
        try:
            logits, features = self._run(probe_input)
        finally:
            for m, flag in flags.items():
                m.training = flag
        channels = [int(f.shape[1]) for f in features]
        if self.feature_channels is not None and channels != self.feature_channels:
            raise ValueError(
                f"feature_channels={self.feature_channels} but the probe found {channels} "
                f"for {self.feature_modules}"
            )
        self.feature_channels = channels
        spatial = tuple(probe_input.shape[2:])
        strides = self._strides(spatial, features)
        if self.feature_strides is not None and strides != self.feature_strides:
            raise ValueError(
                f"feature_strides={self.feature_strides} but the probe found {strides} "
                f"for {self.feature_modules}"
            )
        self.feature_strides = strides
        if any(_cells(a) < _cells(b) for a, b in zip(strides, strides[1:])):
            warnings.warn(
                f"FeatureTap: strides {strides} are not coarsest-first; list "
                "feature_modules from lowest to highest resolution",
                stacklevel=3,
            )
        if self.in_channels is None:
            self.in_channels = int(probe_input.shape[1])
        if self.num_classes is None:
            self.num_classes = int(logits.shape[1])
        self._check_outputs(probe_input, logits, features)

    def _strides(self, spatial: tuple[int, ...], features: list[torch.Tensor]) -> list[Stride]:
        pairs = zip(self.feature_modules, features)
        return [_stride(spatial, tuple(f.shape[2:]), n) for n, f in pairs]

    def _check_outputs(
        self, image: torch.Tensor, logits: torch.Tensor, features: list[torch.Tensor]
    ) -> None:
        spatial = tuple(image.shape[2:])
        if tuple(logits.shape[2:]) != spatial or logits.shape[0] != image.shape[0]:
            raise RuntimeError(
                f"{self.name} returned logits of shape {tuple(logits.shape)} for an image of "
                f"shape {tuple(image.shape)}; the backbone contract needs (B, K, *spatial) "
                "at the input resolution"
            )
        if self.num_classes is not None and logits.shape[1] != self.num_classes:
            raise RuntimeError(
                f"{self.name} returned {logits.shape[1]} logit channels, expected "
                f"num_classes={self.num_classes}"
            )
        channels = [int(f.shape[1]) for f in features]
        if self.feature_channels is not None and channels != self.feature_channels:
            raise RuntimeError(
                f"tapped features have channels {channels}, expected {self.feature_channels}"
            )
        strides = self._strides(spatial, features)
        if self.feature_strides is None:
            self.feature_strides = strides
        elif strides != self.feature_strides:
            raise RuntimeError(
                f"tapped features have strides {strides}, expected {self.feature_strides}"
            )


def _net_attr(net: nn.Module, *names: str) -> int | None:
    for n in names:
        v = getattr(net, n, None)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _stride(image_size: tuple[int, ...], feat_size: tuple[int, ...], name: str) -> Stride:
    """Integer down-sampling factor of ``feat_size`` vs ``image_size``: an int when it is the
    same on every axis, else one int per axis.

    >>> _stride((32, 64, 64), (8, 16, 16), "x"), _stride((32, 64, 64), (32, 32, 32), "x")
    (4, (1, 2, 2))
    """
    if len(image_size) != len(feat_size):
        raise ValueError(f"'{name}' output has spatial size {feat_size} for input {image_size}")
    ratios = []
    for s, f in zip(image_size, feat_size):
        if f == 0 or s % f:
            raise ValueError(
                f"'{name}' output size {feat_size} does not divide the input size {image_size}"
            )
        ratios.append(s // f)
    return _normalise_stride(ratios)


def _normalise_stride(stride: Stride | Sequence[int]) -> Stride:
    """One form per stride, so that strides compare equal: ``2``, ``[2, 2]`` -> ``2``;
    ``[1, 2, 2]`` -> ``(1, 2, 2)``."""
    if isinstance(stride, int):
        return int(stride)
    axes = tuple(int(s) for s in stride)
    return axes[0] if len(set(axes)) == 1 else axes


def _cells(stride: Stride) -> int:
    """Input cells per feature cell: the stride's product over the axes (int: per axis)."""
    return stride if isinstance(stride, int) else math.prod(stride)
