"""Experiments: ablation variants over seeds through the same training and evaluation code.

``morse compare`` (:func:`morse.experiments.compare.compare`) trains and scores each variant
with each seed, then writes one table with means over seeds and paired bootstrap differences
to the plain backbone (:mod:`morse.experiments.results`, :mod:`morse.experiments.stats`).
"""
