"""Which tensors a derived value was computed from, to know when to compute it again.

The renderer keeps values derived from its weights between inference passes (packed bf16
weights, the coordinate code of a render grid). A ``Stamp`` records the tensors by weak
reference and their versions: an in-place update (an optimiser step, ``load_state_dict``)
bumps the version, a replaced tensor is another object, and either makes the stamp stale.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import torch

__all__ = ["Stamp"]


class Stamp(NamedTuple):
    """The identity and version of some tensors (None allowed, e.g. a layer without bias).

    >>> weight = torch.zeros(2)
    >>> stamp = Stamp.of(weight, None)
    >>> stamp.matches(weight, None), stamp.matches(weight.clone(), None)
    (True, False)
    >>> _ = weight.add_(1)
    >>> stamp.matches(weight, None)
    False
    """

    refs: tuple[weakref.ref | None, ...]
    versions: tuple[int | None, ...]

    @classmethod
    def of(cls, *tensors: torch.Tensor | None) -> Stamp:
        return cls(tuple(None if t is None else weakref.ref(t) for t in tensors),
                   tuple(None if t is None else t._version for t in tensors))

    def matches(self, *tensors: torch.Tensor | None) -> bool:
        """Whether ``tensors`` are the stamped ones, unchanged since."""
        if len(tensors) != len(self.refs):
            return False
        return all((ref is None and t is None)
                   or (ref is not None and t is not None and ref() is t and t._version == version)
                   for ref, t, version in zip(self.refs, tensors, self.versions))
