"""The capture store behind ``FeatureTap``: per-thread stacks of hooked module outputs.

See ``morse.backbone.hooks`` for why the store is a per-thread stack that deep copies and
pickles start empty.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
import torch.nn as nn

__all__ = ["CaptureHook", "CaptureState", "tensor_version"]


class CaptureState:
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

    def __deepcopy__(self, memo: dict[int, Any]) -> CaptureState:
        return CaptureState()


def tensor_version(t: torch.Tensor) -> int:
    try:
        return int(t._version)
    except RuntimeError:  # inference-mode tensors have no version counter
        return -1


def first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (list, tuple)):
        for o in output:
            if isinstance(o, torch.Tensor):
                return o
    return None


class CaptureHook:
    """Forward hook that records a module's output in the tap's active store.

    A class (not a closure) so that ``deepcopy``/``pickle`` of the wrapped network
    re-targets the hook to the copy's own :class:`CaptureState`.
    """

    def __init__(self, name: str, state: CaptureState) -> None:
        self.name = name
        self.state = state

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        store = self.state.current()
        if store is None:  # not inside FeatureTap.forward: ignore
            return None
        tensor = first_tensor(output)
        if tensor is None:
            raise RuntimeError(
                f"FeatureTap: module '{self.name}' ({type(module).__name__}) returned "
                f"{type(output).__name__}, not a tensor; tap a different module"
            )
        store[self.name] = (tensor, tensor_version(tensor))
        return None
