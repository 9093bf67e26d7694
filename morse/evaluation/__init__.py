"""Evaluation: per-class, per-case metrics with an explicit empty-mask policy, and scoring runs."""
