"""Training: the loop, step-seeded batches, random states, checkpoints and DDP."""
