"""Batches are a pure function of (seed, step, rank): resumes and ranks see the right samples."""

from __future__ import annotations

import pytest

from morse.training.sampling import SeededItems, StepBatchSampler


def test_a_resumed_sampler_yields_the_same_remaining_batches():
    whole = list(StepBatchSampler(7, batch_size=3, seed=5, total_steps=10))
    resumed = list(StepBatchSampler(7, batch_size=3, seed=5, total_steps=10, start_step=4))
    assert resumed == whole[4:]


def test_each_epoch_visits_every_sample_once():
    batches = list(StepBatchSampler(6, batch_size=2, seed=1, total_steps=6))
    indices = [index for batch in batches for index, _ in batch]
    assert sorted(indices[:6]) == list(range(6)) and sorted(indices[6:]) == list(range(6))
    assert indices[:6] != indices[6:]  # a new permutation each epoch


def test_ranks_split_the_global_batch_of_a_single_process():
    single = StepBatchSampler(10, batch_size=4, seed=2, total_steps=3)
    ranks = [StepBatchSampler(10, batch_size=2, seed=2, total_steps=3, rank=r, world_size=2)
             for r in range(2)]
    for step in range(3):
        assert ranks[0].batch(step) + ranks[1].batch(step) == single.batch(step)


def test_seeds_differ_between_items_and_steps():
    sampler = StepBatchSampler(4, batch_size=2, seed=0, total_steps=2)
    seeds = [seed for step in range(2) for _, seed in sampler.batch(step)]
    assert len(set(seeds)) == len(seeds)


def test_an_empty_training_set_is_refused():
    with pytest.raises(ValueError, match="empty"):
        StepBatchSampler(0, batch_size=2, seed=0, total_steps=1)


def test_seeded_items_reseed_before_each_item():
    class Recorder:
        def __init__(self):
            self.epochs = []

        def __len__(self):
            return 3

        def set_epoch(self, seed):
            self.epochs.append(seed)

        def __getitem__(self, index):
            return (index, self.epochs[-1])

    items = SeededItems(Recorder())
    assert items[(2, 11)] == (2, 11) and items[(0, 12)] == (0, 12) and len(items) == 3
