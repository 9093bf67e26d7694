"""Which samples each training step sees, as a pure function of (seed, step, rank).

A resumed run therefore sees exactly the batches the uninterrupted run would have seen, and
every random augmentation is seeded per item from the same triple, so data order and
augmentation need no saved state and survive a kill at any step.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from morse.data.datasets import item_seed

__all__ = ["StepBatchSampler", "SeededItems", "reseed"]


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for steps ``start_step..total_steps-1``, this rank's (index, seed) pairs.

    Each epoch is a seeded permutation of the dataset; the global batch of a step is the next
    ``batch_size * world_size`` entries (wrapping into the next epoch), and rank r takes its
    contiguous share. Every rank computes the same permutation, so no communication is needed.

    >>> sampler = StepBatchSampler(5, batch_size=2, seed=0, total_steps=3)
    >>> [len(batch) for batch in sampler]
    [2, 2, 2]
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        seed: int,
        total_steps: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if dataset_size < 1:
            raise ValueError("the training set is empty: no samples to draw batches from")
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.seed = seed
        self.total_steps = total_steps
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.dataset_size, generator=generator)

    def batch(self, step: int) -> list[tuple[int, int]]:
        """This rank's (dataset index, augmentation seed) pairs for ``step``."""
        global_batch = self.batch_size * self.world_size
        first = step * global_batch + self.rank * self.batch_size
        pairs = []
        for offset in range(self.batch_size):
            position = first + offset
            epoch, within = divmod(position, self.dataset_size)
            index = int(self._permutation(epoch)[within])
            pairs.append((index, item_seed(self.seed, step, position - step * global_batch)))
        return pairs

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.total_steps):
            yield self.batch(step)


class SeededItems(Dataset):
    """Wraps a dataset so that ``item((index, seed))`` reseeds its augmentation first."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        reseed(self.dataset, seed)
        return self.dataset[index]


def reseed(dataset: object, seed: int) -> None:
    """Seed a dataset's augmentation for the next item.

    ``SliceDataset`` and ``PatchDataset`` draw their randomness from (seed, epoch, index);
    setting their epoch to the step-derived seed makes every item a function of the step.
    """
    if hasattr(dataset, "set_random_state"):
        dataset.set_random_state(seed)
    elif hasattr(dataset, "set_epoch"):
        dataset.set_epoch(seed)
