"""``morse compare``: ablation variants x seeds, trained and scored alike, in one table.

Each (variant, seed) run goes through :func:`morse.training.loop.train` and
:func:`morse.evaluation.evaluate.evaluate`, the code behind ``morse train`` and ``morse
evaluate`` (:func:`morse.evaluation.heldout.evaluate_run`, held-out sets included), into
``DIR/<variant>/seed<k>/``; its scores land in ``eval_<subset>/metrics.json`` there and the wall
time of its training in ``train_time.json``. Variants differ only in the renderer's switches
and seeds only in ``train.seed``: data, split (``data.seed``), budget, augmentation and
evaluation are the same for every run.

Everything that can be checked without training is checked first: the variants, seeds and
overrides, each run folder's saved settings, and that every subset to score holds cases.

Running the same command again picks up where it stopped: a run scored on every subset asked
for is skipped, one with ``last.pt`` resumes from it (``train(..., resume=True)``), so a long
comparison can be spread over several sittings.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from morse.config import Config, load_config
from morse.data.prepare import split_of
from morse.errors import ConfigError, DataError
from morse.evaluation.heldout import evaluate_run, heldout_pair
from morse.experiments.plot import plot_paired_differences
from morse.experiments.results import build_comparison, read_metrics
from morse.experiments.tables import format_markdown
from morse.io import atomic_write_text
from morse.io.checkpoint import LAST_NAME, load_checkpoint
from morse.training.loop import train
from morse.training.resume import training_changes

__all__ = [
    "FIGURE",
    "QUICK",
    "SUBSETS",
    "TIME_NAME",
    "VARIANTS",
    "Plan",
    "RunSpec",
    "compare",
    "make_plan",
    "check_plan",
    "run_comparison",
    "train_seconds",
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

#: The subsets a comparison may be scored on: choose settings on val, report test (the split's)
#: or heldout (the dataset's imagesTs + labelsTs, or --images/--labels) once.
SUBSETS = ("val", "test", "heldout")

#: Where a run of a comparison keeps the wall seconds of its training, summed over sittings.
TIME_NAME = "train_time.json"

#: The plot's file name in the comparison folder.
FIGURE = "paired_differences_{subset}.png"

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
    subsets: tuple[str, ...]
    quick: bool
    runs: tuple[RunSpec, ...]
    images: str | None = None
    labels: str | None = None

    def command_line(self) -> str:
        """The command that reproduces (or resumes) this comparison, defaults spelled out."""
        words = ["morse", "compare", self.config, *self.overrides,
                 "--variants", *self.variants, "--seeds", *map(str, self.seeds),
                 "-o", str(self.output), "--subset", *self.subsets]
        if self.images is not None:
            words += ["--images", self.images, "--labels", str(self.labels)]
        return shlex.join(words + (["--quick"] if self.quick else []))


def make_plan(
    config: str,
    overrides: Sequence[str] = (),
    *,
    output: str | Path,
    variants: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    subsets: Sequence[str] = ("val",),
    images: str | None = None,
    labels: str | None = None,
    quick: bool = False,
) -> Plan:
    """Resolve every run's config (errors before any training); seeds outermost, so each
    sitting completes whole seeds and the paired differences grow seed by seed.

    ``subsets``: each one of :data:`SUBSETS`; ``images`` and ``labels``: a held-out folder
    pair instead of the dataset's imagesTs + labelsTs (with ``"heldout"`` among the subsets).
    """
    subsets = _checked_subsets(subsets, images, labels)
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
    return Plan(config, tuple(overrides), variants, seeds, output, subsets, quick, runs,
                images, labels)


def _checked_subsets(subsets: Sequence[str], images: str | None,
                     labels: str | None) -> tuple[str, ...]:
    """The subsets, each known and named once; a held-out folder pair only with heldout."""
    subsets = (subsets,) if isinstance(subsets, str) else tuple(subsets)
    for subset in subsets:
        if subset not in SUBSETS:
            raise ConfigError(f"--subset {subset}: unknown subset; choose from "
                              f"{', '.join(SUBSETS)} (heldout: the dataset's imagesTs + "
                              "labelsTs, or --images DIR --labels DIR)")
    if not subsets or len(set(subsets)) != len(subsets):
        raise ConfigError(f"--subset {' '.join(subsets)}: name each subset once")
    if (images is None) != (labels is None):
        raise ConfigError("--images and --labels go together: give the held-out scans and the "
                          "folder of their label maps")
    if images is not None and "heldout" not in subsets:
        raise ConfigError("--images/--labels give the held-out set to score: add --subset "
                          "heldout")
    return subsets


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
    subsets: Sequence[str] = ("val",),
    images: str | None = None,
    labels: str | None = None,
    quick: bool = False,
) -> dict[str, dict]:
    """Run (or finish) a comparison and write, for each subset, ``comparison_<subset>.json``,
    ``.md`` and ``paired_differences_<subset>.png`` into ``output``; see :func:`make_plan`
    for the arguments.

    Returns:
        ``{subset: content of comparison_<subset>.json}``.
    """
    plan = make_plan(config, overrides, output=output, variants=variants, seeds=seeds,
                     subsets=subsets, images=images, labels=labels, quick=quick)
    check_plan(plan)
    docs: dict[str, dict[str, dict[int, dict]]] = {subset: {} for subset in plan.subsets}
    for spec, paths in zip(plan.runs, run_comparison(plan), strict=True):
        for subset, path in paths.items():
            docs[subset].setdefault(spec.variant, {})[spec.seed] = read_metrics(path)
    seconds: dict[str, dict[int, float | None]] = {}
    for spec in plan.runs:
        seconds.setdefault(spec.variant, {})[spec.seed] = train_seconds(spec.run_dir)
    return {subset: _write_table(plan, subset, docs[subset], seconds)
            for subset in plan.subsets}


def _write_table(plan: Plan, subset: str, docs: dict[str, dict[int, dict]],
                 seconds: dict[str, dict[int, float | None]]) -> dict:
    """``comparison_<subset>.json``, ``.md`` and the plot of one subset; its content."""
    comparison = build_comparison(docs, plan.command_line(), subset, seconds)
    figure = FIGURE.format(subset=subset)
    text = format_markdown(comparison, figure if comparison["paired"] else None)
    table = plan.output / f"comparison_{subset}.md"
    atomic_write_text(table.with_suffix(".json"), json.dumps(comparison, indent=2,
                                                             allow_nan=False))
    atomic_write_text(table, text)
    if comparison["paired"]:
        plot_paired_differences(comparison, plan.output / figure)
    print(f"\n{text}\nwrote {table}, {table.with_suffix('.json').name}"
          + (f" and {figure}" if comparison["paired"] else ""))
    return comparison


def check_plan(plan: Plan) -> None:
    """Before any training: every run folder holds this plan's settings (or nothing yet),
    and every subset that some run still has to be scored on holds cases."""
    for spec in plan.runs:
        _check_same_settings(spec)
    pending = [subset for subset in plan.subsets
               if any(not spec.metrics_path(subset).is_file() for spec in plan.runs)]
    cfg = plan.runs[0].config  # data settings are the same for every run
    split = split_of(cfg.data) if set(pending) - {"heldout"} else None
    for subset in pending:
        if subset == "heldout":
            heldout_pair(cfg, plan.images, plan.labels)
        elif split is not None and not getattr(split, subset):
            counts = ", ".join(f"{len(cases)} {name}" for name, cases in split.as_dict().items())
            raise DataError(
                f"{cfg.data.root}: the split's {subset} subset holds no case ({counts}); give it "
                f"a share of data.split_fractions (now {list(cfg.data.split_fractions)}) or "
                "cases in the split file, or choose another --subset")


def run_comparison(plan: Plan) -> list[dict[str, Path]]:
    """Train and score every run of ``plan`` not yet done; per run ``{subset: metrics.json}``."""
    return [_run_one(spec, plan) for spec in plan.runs]


def _run_one(spec: RunSpec, plan: Plan) -> dict[str, Path]:
    """Skip, resume or start one run, then score it on each subset not yet scored."""
    paths = {subset: spec.metrics_path(subset) for subset in plan.subsets}
    missing = [subset for subset, path in paths.items() if not path.is_file()]
    if not missing:
        print(f"compare: {spec.label}: done ({', '.join(map(str, paths.values()))} exist), "
              "skipped")
        return paths
    last = spec.run_dir / LAST_NAME
    if last.is_file():
        step, total = int(load_checkpoint(last)["step"]), spec.config.train.iterations
        if step < total:
            print(f"compare: {spec.label}: resuming from step {step} of {total} ({last})")
            _timed_train(spec, resume=True)
        else:
            print(f"compare: {spec.label}: trained ({total} steps), scoring it on "
                  f"{', '.join(missing)}")
    else:
        print(f"compare: {spec.label}: training into {spec.run_dir}")
        _timed_train(spec, resume=False)
    for subset in missing:
        evaluate_run(spec.run_dir, paths[subset].parent, subset=subset, images=plan.images,
                     labels=plan.labels)
    return paths


def _timed_train(spec: RunSpec, resume: bool) -> None:
    """Train (or resume) one run and add this sitting's wall seconds to its
    :data:`TIME_NAME`, an interrupted sitting included, so a resumed run keeps its total."""
    start = time.perf_counter()
    try:
        train(spec.config, spec.run_dir, resume=resume)
    finally:
        if (spec.run_dir / LAST_NAME).is_file():  # something was trained in this folder
            path = spec.run_dir / TIME_NAME
            before = json.loads(path.read_text()) if path.is_file() else {}
            record = {"seconds": before.get("seconds", 0.0) + time.perf_counter() - start,
                      "sittings": before.get("sittings", 0) + 1}
            atomic_write_text(path, json.dumps(record) + "\n")


def train_seconds(run_dir: Path) -> float | None:
    """The wall seconds a run's training took over all its sittings; None when the run was
    trained without ``morse compare`` recording them."""
    path = Path(run_dir) / TIME_NAME
    try:
        return float(json.loads(path.read_text())["seconds"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path}: unreadable ({error}); delete it (the table will say the "
                          "time was not recorded)") from error


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
