"""``morse compare``: ablation variants x seeds, trained and scored alike, in one table.

Each (variant, seed) run goes through :func:`morse.training.loop.train` and
:func:`morse.evaluation.evaluate.evaluate`, the code behind ``morse train`` and ``morse
evaluate``, into ``DIR/<variant>/seed<k>/``; its scores land in ``eval_<subset>/metrics.json``
there. Variants differ only in the renderer's switches and seeds only in ``train.seed``: data,
split (``data.seed``), budget, augmentation and evaluation are the same for every run.

Running the same command again picks up where it stopped: a run with its ``metrics.json`` is
skipped, one with ``last.pt`` resumes from it (``train(..., resume=True)``), so a long
comparison can be spread over several sittings.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from morse.config import Config, load_config
from morse.errors import ConfigError
from morse.evaluation.evaluate import evaluate
from morse.experiments.plot import plot_paired_differences
from morse.experiments.results import build_comparison, format_markdown, read_metrics
from morse.io import atomic_write_text
from morse.io.checkpoint import LAST_NAME, load_checkpoint
from morse.training.loop import train
from morse.training.resume import training_changes

__all__ = [
    "FIGURE",
    "QUICK",
    "SUBSETS",
    "VARIANTS",
    "Plan",
    "RunSpec",
    "compare",
    "make_plan",
    "run_comparison",
    "variant_overrides",
]

#: The renderer switches a variant sets; every variant sets all of them (default: on).
SWITCHES = ("renderer", "experts", "stochastic_gating", "fourier")

#: Each variant: the switches it turns off.
VARIANTS: dict[str, tuple[str, ...]] = {
    "plain": ("renderer",),                  # the backbone alone, same loop and budget
    "pointrend": ("experts", "fourier"),     # PointRend's head: scales concatenated, no Fourier
    "no-gating": ("stochastic_gating",),     # experts, but every expert in every step
    "no-fourier": ("fourier",),              # experts and gating, no coordinate encoding
    "morse": (),                             # the full method
}
DEFAULT_SEEDS = (0, 1, 2)

#: ``--quick``: a budget that proves the harness in seconds on a CPU (UNet backbone).
QUICK = (
    "train.iterations=4", "train.val_every=4", "train.checkpoint_every=1", "train.log_every=1",
    "train.batch_size=2", "data.num_workers=0", "model.backbone_options={width: 0.25}",
    "model.expert_width=16", "model.head_width=16", "model.train_points=64",
    "model.render_points=64", "model.num_frequencies=8",
)
QUICK_VARIANTS, QUICK_SEEDS = ("plain", "morse"), (0,)

#: The subsets a comparison may be scored on: choose settings on val, report test once.
SUBSETS = ("val", "test")

#: The plot's file name in the comparison folder.
FIGURE = "paired_differences_{subset}.png"

#: Keys that may differ between sittings without changing a run's result.
def variant_overrides(name: str) -> list[str]:
    """The ``model.*`` overrides of a variant: all of :data:`SWITCHES`, on or off.

    >>> variant_overrides("pointrend")
    ['model.renderer=true', 'model.experts=false', 'model.stochastic_gating=true', \
'model.fourier=false']
    >>> variant_overrides("pointrand")
    Traceback (most recent call last):
    ...
    morse.errors.ConfigError: unknown variant 'pointrand'; known: plain, pointrend, \
no-gating, no-fourier, morse
    """
    if name not in VARIANTS:
        hint = "; put section.key=value overrides right after CONFIG" if "=" in name else ""
        raise ConfigError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}{hint}")
    off = VARIANTS[name]
    return [f"model.{switch}={'false' if switch in off else 'true'}" for switch in SWITCHES]


@dataclass(frozen=True)
class RunSpec:
    """One run of a comparison: its variant, seed, resolved config and folder."""

    variant: str
    seed: int
    config: Config
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.variant}/seed{self.seed}"

    def metrics_path(self, subset: str) -> Path:
        return self.run_dir / f"eval_{subset}" / "metrics.json"


@dataclass(frozen=True)
class Plan:
    """A whole comparison: what was asked for and the runs it takes."""

    config: str
    overrides: tuple[str, ...]
    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    output: Path
    subset: str
    quick: bool
    runs: tuple[RunSpec, ...]

    def command_line(self) -> str:
        """The command that reproduces (or resumes) this comparison, defaults spelled out."""
        words = ["morse", "compare", self.config, *self.overrides,
                 "--variants", *self.variants, "--seeds", *map(str, self.seeds),
                 "-o", str(self.output), "--subset", self.subset]
        return shlex.join(words + (["--quick"] if self.quick else []))


def make_plan(
    config: str,
    overrides: Sequence[str] = (),
    *,
    output: str | Path,
    variants: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    subset: str = "val",
    quick: bool = False,
) -> Plan:
    """Resolve every run's config (errors before any training); seeds outermost, so each
    sitting completes whole seeds and the paired differences grow seed by seed."""
    if subset not in SUBSETS:
        raise ConfigError(f"--subset {subset}: choose one of {', '.join(SUBSETS)}")
    _refuse_owned_keys(overrides)
    variants = tuple(variants) if variants else (QUICK_VARIANTS if quick else tuple(VARIANTS))
    seeds = tuple(seeds) if seeds else (QUICK_SEEDS if quick else DEFAULT_SEEDS)
    if len(set(variants)) != len(variants) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--variants {' '.join(variants)} --seeds {' '.join(map(str, seeds))}:"
                          " name each variant and seed once")
    base = [*(QUICK if quick else ()), *overrides]
    output = Path(output)
    runs = tuple(
        RunSpec(variant, seed, load_config(config, [*base, *variant_overrides(variant),
                                                    f"train.seed={seed}"]),
                output / variant / f"seed{seed}")
        for seed in seeds for variant in variants
    )
    return Plan(config, tuple(overrides), variants, seeds, output, subset, quick, runs)


def _refuse_owned_keys(overrides: Sequence[str]) -> None:
    """Variants own the renderer switches and ``--seeds`` owns ``train.seed``."""
    owned = {f"model.{switch}": "--variants" for switch in SWITCHES} | {"train.seed": "--seeds"}
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in owned:
            raise ConfigError(f"override {item!r}: {key} is set by {owned[key]} for every run; "
                              f"drop it and choose with {owned[key]}")


def compare(
    config: str,
    overrides: Sequence[str] = (),
    *,
    output: str | Path,
    variants: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    subset: str = "val",
    quick: bool = False,
) -> dict:
    """Run (or finish) a comparison and write ``comparison_<subset>.json``, ``.md`` and
    ``paired_differences_<subset>.png`` into ``output`` (a val and a test table side by side);
    see :func:`make_plan` for the arguments.

    Returns:
        The content of ``comparison_<subset>.json``.
    """
    plan = make_plan(config, overrides, output=output, variants=variants, seeds=seeds,
                     subset=subset, quick=quick)
    docs: dict[str, dict[int, dict]] = {}
    for spec, path in zip(plan.runs, run_comparison(plan), strict=True):
        docs.setdefault(spec.variant, {})[spec.seed] = read_metrics(path)
    comparison = build_comparison(docs, plan.command_line(), plan.subset)
    figure = FIGURE.format(subset=plan.subset)
    text = format_markdown(comparison, figure if comparison["paired"] else None)
    table = plan.output / f"comparison_{plan.subset}.md"
    atomic_write_text(table.with_suffix(".json"), json.dumps(comparison, indent=2,
                                                             allow_nan=False))
    atomic_write_text(table, text)
    if comparison["paired"]:
        plot_paired_differences(comparison, plan.output / figure)
    print(f"\n{text}\nwrote {table}, {table.with_suffix('.json').name}"
          + (f" and {figure}" if comparison["paired"] else ""))
    return comparison


def run_comparison(plan: Plan) -> list[Path]:
    """Train and score every run of ``plan`` not yet done; the ``metrics.json`` paths."""
    return [_run_one(spec, plan.subset) for spec in plan.runs]


def _run_one(spec: RunSpec, subset: str) -> Path:
    """Skip, resume or start one run, then score it on ``subset``."""
    metrics, last = spec.metrics_path(subset), spec.run_dir / LAST_NAME
    _check_same_settings(spec)
    if metrics.is_file():
        print(f"compare: {spec.label}: done ({metrics} exists), skipped")
        return metrics
    if last.is_file():
        step, total = int(load_checkpoint(last)["step"]), spec.config.train.iterations
        if step < total:
            print(f"compare: {spec.label}: resuming from step {step} of {total} ({last})")
            train(spec.config, spec.run_dir, resume=True)
        else:
            print(f"compare: {spec.label}: trained ({total} steps), scoring it")
    else:
        print(f"compare: {spec.label}: training into {spec.run_dir}")
        train(spec.config, spec.run_dir)
    evaluate(spec.run_dir, metrics.parent, subset=subset)
    return metrics


def _check_same_settings(spec: RunSpec) -> None:
    """Refuse a run folder trained with other settings than this call's, so one table never
    mixes budgets; the message names the keys and the fix."""
    saved = spec.run_dir / "config.yaml"
    if not saved.is_file():
        return
    differ = training_changes(load_config(saved), spec.config)
    if differ:
        raise ConfigError(
            f"{saved}: {spec.label} was trained with other settings ({'; '.join(differ[:5])}); "
            "run the comparison with the settings it was started with, or choose another -o"
        )
