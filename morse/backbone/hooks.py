"""Feature taps: turn any logits-only segmentation network into a MORSE backbone.

MORSE needs, besides a backbone's coarse logits, its decoder feature maps at several
scales.  :class:`FeatureTap` wraps an arbitrary ``nn.Module`` that returns only logits,
registers forward hooks on named submodules and returns ``(logits, features)`` - the
backbone contract of :mod:`morse.backbone`:

* ``logits``: ``(B, K, *spatial)`` at the input's resolution;
* ``features``: list of ``S`` tensors ``(B, c_s, *spatial_s)``, coarsest first;
* attributes ``feature_channels``, ``feature_strides``, ``spatial_dims``,
  ``in_channels``, ``num_classes``.

The module also holds :func:`check_image`, the shared up-front input check (dtype,
rank, channel count, spatial size) that every backbone of this package runs.

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
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

__all__ = ["FeatureTap", "check_image", "first_logits", "padded_size"]


# ----------------------------------------------------------------------------- input checks
def padded_size(spatial: Sequence[int], multiple: int | Sequence[int]) -> tuple[int, ...]:
    """Smallest size ``>= spatial`` whose every entry is a multiple of ``multiple``.

    >>> padded_size((30, 32, 1), 16)
    (32, 32, 16)
    >>> padded_size((30, 33), (2, 4))
    (30, 36)
    """
    mult = _per_axis(multiple, len(spatial))
    return tuple(-(-int(s) // m) * m for s, m in zip(spatial, mult))


def _per_axis(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"expected {n} per-axis values, got {value}")
    return value


def check_image(
    image: Any,
    *,
    spatial_dims: int,
    in_channels: int | None,
    size_multiple: int | Sequence[int] = 1,
    required_size: Sequence[int] | None = None,
    name: str = "backbone",
) -> None:
    """Validate a backbone input up front, with messages that say how to fix it.

    Args:
        image: the would-be input, expected ``(B, C_in, *spatial)`` floating point.
        spatial_dims: 2 or 3; the image must have ``spatial_dims + 2`` dimensions.
        in_channels: expected ``C_in`` (``None`` skips the check).
        size_multiple: every spatial size must be a multiple of this (int or per axis).
        required_size: if given, the spatial size must equal it exactly (e.g. UNETR,
            whose position embedding is built for one ``img_size``).
        name: network name used in the messages.

    Raises:
        TypeError: not a tensor, or not a floating-point tensor.
        ValueError: wrong rank, channel count or spatial size.

    >>> check_image(torch.zeros(2, 1, 32, 48), spatial_dims=2, in_channels=1, size_multiple=16)
    >>> check_image(torch.zeros(2, 1, 30, 48), spatial_dims=2, in_channels=1, size_multiple=16)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: backbone needs ... multiple of 16, got (30, 48); pad the image to (32, 48) ...
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor image, got {type(image).__name__}")
    if not (image.is_floating_point() or image.is_complex()):
        raise TypeError(
            f"{name} expects a floating-point image, got dtype {image.dtype}; "
            "convert with image.float()"
        )
    if image.is_complex():
        raise TypeError(f"{name} expects a real floating-point image, got dtype {image.dtype}")
    if image.ndim != spatial_dims + 2:
        raise ValueError(
            f"{name} is {spatial_dims}D and expects an image of shape (B, C, "
            f"{', '.join('XYZ'[:spatial_dims])}) with {spatial_dims + 2} dimensions; "
            f"got shape {tuple(image.shape)}"
        )
    if in_channels is not None and image.shape[1] != in_channels:
        raise ValueError(
            f"{name} was built for in_channels={in_channels} but the image has "
            f"{image.shape[1]} channels (shape {tuple(image.shape)})"
        )
    spatial = tuple(int(s) for s in image.shape[2:])
    if required_size is not None:
        required = tuple(int(s) for s in required_size)
        if spatial != required:
            raise ValueError(
                f"{name} was built for spatial size {required} (img_size) and cannot take "
                f"{spatial}; crop/pad the image to {required} or rebuild with img_size={spatial}"
            )
        return
    mult = _per_axis(size_multiple, spatial_dims)
    if any(s % m for s, m in zip(spatial, mult)):
        target = padded_size(spatial, mult)
        k = mult[0] if len(set(mult)) == 1 else mult
        raise ValueError(
            f"{name} needs every spatial size to be a multiple of {k}, got {spatial}; "
            f"pad the image to {target} (e.g. monai.transforms.DivisiblePad(k={k}))."
        )


def first_logits(output: Any) -> torch.Tensor:
    """Default logits selector: the tensor itself, or element 0 of a list/tuple.

    Deep-supervision networks return ``[logits, aux_1, ...]``; the first entry is the
    full-resolution prediction.

    >>> first_logits((torch.zeros(1), torch.ones(1))).item()
    0.0
    """
    if isinstance(output, (list, tuple)):
        if not output:
            raise RuntimeError("the wrapped network returned an empty list/tuple")
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"the wrapped network returned {type(output).__name__}; pass logits_fn= to "
            "FeatureTap to say how to get the logits tensor out of it"
        )
    return output


# ----------------------------------------------------------------------------- capture store
class _CaptureState:
    """Per-thread stack of capture dictionaries ``{module name: (tensor, version)}``.

    Copying or unpickling gives a fresh, empty state (``threading.local`` is neither
    copyable nor picklable, and a copy must never share captures with its original).
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def _stack(self) -> list[dict[str, tuple[torch.Tensor, int]]]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def push(self) -> dict[str, tuple[torch.Tensor, int]]:
        store: dict[str, tuple[torch.Tensor, int]] = {}
        self._stack().append(store)
        return store

    def pop(self, store: dict[str, tuple[torch.Tensor, int]]) -> None:
        stack = self._stack()
        if stack and stack[-1] is store:
            stack.pop()
        else:  # defensive: never leave a store behind
            stack[:] = [s for s in stack if s is not store]
        store.clear()

    def current(self) -> dict[str, tuple[torch.Tensor, int]] | None:
        stack = self._stack()
        return stack[-1] if stack else None

    def depth(self) -> int:
        """Number of active stores in the calling thread (0 outside a forward)."""
        return len(self._stack())

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._local = threading.local()

    def __deepcopy__(self, memo: dict[int, Any]) -> _CaptureState:
        return _CaptureState()


def _version(t: torch.Tensor) -> int:
    try:
        return int(t._version)
    except RuntimeError:  # inference-mode tensors have no version counter
        return -1


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (list, tuple)):
        for o in output:
            if isinstance(o, torch.Tensor):
                return o
    return None


class _CaptureHook:
    """Forward hook that records a module's output in the tap's active store.

    A class (not a closure) so that ``deepcopy``/``pickle`` of the wrapped network
    re-targets the hook to the copy's own :class:`_CaptureState`.
    """

    def __init__(self, name: str, state: _CaptureState) -> None:
        self.name = name
        self.state = state

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        store = self.state.current()
        if store is None:  # not inside FeatureTap.forward: ignore
            return None
        tensor = _first_tensor(output)
        if tensor is None:
            raise RuntimeError(
                f"FeatureTap: module '{self.name}' ({type(module).__name__}) returned "
                f"{type(output).__name__}, not a tensor; tap a different module"
            )
        store[self.name] = (tensor, _version(tensor))
        return None


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
        feature_strides: down-sampling factor of each tapped output vs the input; inferred
            by the probe, else taken from this argument, else recorded at the first
            forward (``None`` until then).
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
        feature_strides: Sequence[int] | None = None,
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
        self.feature_strides: list[int] | None = (
            [int(s) for s in feature_strides] if feature_strides is not None else None
        )

        self._state = _CaptureState()
        self._handles = [
            _resolve_module(net, n).register_forward_hook(_CaptureHook(n, self._state))
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
                if version >= 0 and _version(tensor) != version:
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
        if any(a < b for a, b in zip(strides, strides[1:])):
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

    def _strides(self, spatial: tuple[int, ...], features: list[torch.Tensor]) -> list[int]:
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


def _stride(image_size: tuple[int, ...], feat_size: tuple[int, ...], name: str) -> int:
    """Isotropic integer down-sampling factor of ``feat_size`` vs ``image_size``."""
    if len(image_size) != len(feat_size):
        raise ValueError(f"'{name}' output has spatial size {feat_size} for input {image_size}")
    ratios = set()
    for s, f in zip(image_size, feat_size):
        if f == 0 or s % f:
            raise ValueError(
                f"'{name}' output size {feat_size} does not divide the input size {image_size}"
            )
        ratios.add(s // f)
    if len(ratios) != 1:
        raise ValueError(
            f"'{name}' is down-sampled anisotropically ({image_size} -> {feat_size}); the "
            "backbone contract needs one integer stride per feature map"
        )
    return ratios.pop()
