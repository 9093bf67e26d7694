"""nnU-Net against nnU-Net with MORSE on a config's data, through nnU-Net's own commands.

    python -m benchmarks nnunet_compare DIR                 # demo, 5 epochs, 3 repeats
    python -m benchmarks nnunet_compare DIR --table-only    # the table of what has finished

Steps, each skipped when its output exists (run the command again to resume; an unfinished
training continues with nnU-Net's ``--c``):

1. ``morse nnunet dataset CONFIG --id ID`` and ``nnUNetv2_plan_and_preprocess -c 2d``;
2. per repeat r (its own ``DIR/res_r<r>`` results folder; nnU-Net's runs are not seeded):
   ``nnUNetTrainer_<E>epochs``, ``nnUNetTrainerMORSE_<E>epochs`` and the warm start
   ``nnUNetTrainerMORSE_<W>epoch(s)`` from that repeat's plain checkpoint
   (``-pretrained_weights``), one after the other: nnU-Net on a CPU takes every core
   (``torch.set_num_threads(cpu_count)``), so two trainings at once oversubscribe them;
3. ``nnUNetv2_predict`` on imagesTs, then ``morse score`` of the held-out (test) case and of
   nnU-Net's own validation prediction of fold 0;
4. the table: mean and spread over repeats of foreground Dice, HD95 and NSD@1 mm, with
   95% bootstrap intervals of the differences (MORSE and plain are independent runs, so
   both arms are resampled; the warm start is paired with the plain run it started from).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from morse.experiments.stats import cluster_bootstrap, mean_std, small_sample_warning

METRICS = {"dice": "Dice", "hd95": "HD95 (mm)", "nsd_1mm": "NSD@1 mm"}
BIN = Path(sys.executable).parent


def _environment(root: Path, repeat: int | None = None) -> dict[str, str]:
    env = dict(os.environ, nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "pre"),
               nnUNet_n_proc_DA="1", nnUNet_def_n_proc="1")
    if repeat is not None:
        env["nnUNet_results"] = str(root / f"res_r{repeat}")
    return env


def _dataset(root: Path) -> str:
    (folder,) = (root / "raw").glob("Dataset*")
    return folder.name


def prepare(root: Path, config: str, dataset_id: int) -> None:
    """Write the raw dataset and plan it for 2d, unless done."""
    env = _environment(root)
    if not (root / "raw").is_dir():
        subprocess.run([str(BIN / "morse"), "nnunet", "dataset", config, "--id",
                        str(dataset_id)], env=env, check=True)
    if not any((root / "pre").glob("Dataset*/nnUNetPlans.json")):
        subprocess.run([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id),
                        "-c", "2d", "-np", "1"], env=env, check=True)


def _fold(root: Path, repeat: int, trainer: str) -> Path:
    return (root / f"res_r{repeat}" / _dataset(root) / f"{trainer}__nnUNetPlans__2d"
            / "fold_0")


def train(root: Path, dataset_id: int, trainer: str, repeat: int,
          warm_from: str | None = None) -> None:
    """One nnU-Net training (``morse nnunet train``: nnU-Net's own variants need its
    trainer search to pass over modules a CPU torch cannot import); seconds to times.txt."""
    fold = _fold(root, repeat, trainer)
    if (fold / "checkpoint_final.pth").is_file():
        return
    extra = []
    if (fold / "checkpoint_latest.pth").is_file():
        extra = ["--c"]
    elif warm_from:
        extra = ["-pretrained_weights",
                 str(_fold(root, repeat, warm_from) / "checkpoint_final.pth")]
    (root / "logs").mkdir(exist_ok=True)
    start = time.time()
    with open(root / "logs" / f"{trainer}_r{repeat}.log", "a") as log:
        subprocess.run([str(BIN / "morse"), "nnunet", "train", str(dataset_id), "2d", "0",
                        "-tr", trainer, "-device", "cpu", *extra],
                       env=_environment(root, repeat), stdout=log, stderr=log, check=True)
    with open(root / "logs" / "times.txt", "a") as times:
        times.write(f"{trainer}:{repeat} {time.time() - start:.0f} s\n")


def score(root: Path, dataset_id: int, trainer: str, repeat: int) -> None:
    """Predict imagesTs and score it, and nnU-Net's validation prediction, with morse score."""
    dataset, tag = _dataset(root), f"{trainer}_r{repeat}"
    env = _environment(root, repeat)
    prediction = root / "pred" / tag
    if not (root / "scores" / "test" / tag / "metrics.json").is_file():
        subprocess.run([str(BIN / "morse"), "nnunet", "predict", "-i",
                        str(root / "raw" / dataset / "imagesTs"), "-o", str(prediction), "-d",
                        str(dataset_id), "-c", "2d", "-f", "0", "-tr", trainer, "-device",
                        "cpu", "-npp", "1", "-nps", "1"], env=env, check=True,
                       capture_output=True)
        _score(prediction, root / "raw" / dataset / "labelsTs", root / "scores" / "test" / tag)
    if not (root / "scores" / "val" / tag / "metrics.json").is_file():
        _score(_fold(root, repeat, trainer) / "validation", root / "raw" / dataset / "labelsTr",
               root / "scores" / "val" / tag, allow_missing=True)


def _score(predictions: Path, labels: Path, out: Path, allow_missing: bool = False) -> None:
    classes = len(json.loads((labels.parent / "dataset.json").read_text())["labels"])
    command = [str(BIN / "morse"), "score", str(predictions), str(labels), "-o", str(out),
               "--classes", str(classes)]
    subprocess.run(command + (["--allow-missing"] if allow_missing else []), check=True,
                   capture_output=True)


def foreground(metrics_json: Path) -> dict[str, float]:
    """Foreground means (classes 1..K-1, then cases) of :data:`METRICS` from ``morse score``,
    and ``one_empty``: the (case, class) pairs where exactly one of prediction and reference
    is empty (a missed or invented class; its distances are the image diagonal)."""
    per_case = json.loads(metrics_json.read_text())["prediction"]["per_case"]
    means = {key: float(np.mean([np.mean([cls[key] for cls in case.values()])
                                 for case in per_case.values()])) for key in METRICS}
    means["one_empty"] = float(sum(cls.get("policy") == "one_empty"
                                   for case in per_case.values() for cls in case.values()))
    return means


def _unpaired_interval(a: list[float], b: list[float], resamples: int = 10_000
                       ) -> tuple[float, float, float]:
    """Mean of ``b`` minus mean of ``a``, both arms resampled independently (95%)."""
    rng = np.random.default_rng(0)
    xa, xb = np.asarray(a), np.asarray(b)
    means = (xb[rng.integers(0, xb.size, (resamples, xb.size))].mean(1)
             - xa[rng.integers(0, xa.size, (resamples, xa.size))].mean(1))
    low, high = np.quantile(means, [0.025, 0.975])
    return float(xb.mean() - xa.mean()), float(low), float(high)


def table(root: Path, plain: str, morse: str, warm: str, subset: str) -> str:
    """Markdown: per trainer mean ± std over repeats; differences with 95% intervals."""
    runs: dict[str, dict[int, dict[str, float]]] = {}
    for trainer in (plain, morse, warm):
        for path in sorted((root / "scores" / subset).glob(f"{trainer}_r*/metrics.json")):
            runs.setdefault(trainer, {})[int(path.parent.name.rsplit("_r", 1)[1])] = \
                foreground(path)
    lines = [f"| {subset} | repeats | " + " | ".join(METRICS.values())
             + " | classes missed or invented |", "|---|---|" + "---|" * (len(METRICS) + 1)]
    for trainer, by_repeat in runs.items():
        cells = []
        for key in METRICS:
            mean, std = mean_std([m[key] for m in by_repeat.values()])
            cells.append(f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}")
        missed = "/".join(f"{m['one_empty']:.0f}" for m in by_repeat.values())
        lines.append(f"| `{trainer}` | {len(by_repeat)} | " + " | ".join(cells)
                     + f" | {missed} |")
    if plain in runs and morse in runs:
        cells = []
        for key in METRICS:
            diff, low, high = _unpaired_interval([m[key] for m in runs[plain].values()],
                                                 [m[key] for m in runs[morse].values()])
            cells.append(f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]")
        lines.append(f"| MORSE − plain (independent runs) | {len(runs[morse])} vs "
                     f"{len(runs[plain])} | " + " | ".join(cells) + " | |")
    paired = sorted(set(runs.get(warm, {})) & set(runs.get(plain, {})))
    if paired:
        cells = []
        for key in METRICS:
            interval = cluster_bootstrap([[runs[warm][r][key] - runs[plain][r][key]]
                                          for r in paired])
            cells.append(f"{interval.mean:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}]")
        lines.append(f"| warm start − its plain run (paired) | {len(paired)} | "
                     + " | ".join(cells) + " | |")
    warning = small_sample_warning(len(runs.get(plain, {})) or 1, 1)
    if warning:
        lines.append(f"\n{len(runs.get(plain, {}))} repeats x 1 held-out case: {warning}.")
    return "\n".join(lines)


def _budget(epochs: int) -> str:
    """nnU-Net's name of a budget variant: ``1epoch``, ``5epochs``."""
    return f"{epochs}epoch" + ("s" if epochs > 1 else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks nnunet_compare")
    parser.add_argument("root", type=Path, help="experiment folder (nnU-Net's three folders "
                        "go inside)")
    parser.add_argument("--config", default="demo", help="config or preset (default: demo)")
    parser.add_argument("--id", type=int, default=501, dest="dataset_id")
    parser.add_argument("--epochs", type=int, default=5, help="nnU-Net epochs of 250 "
                        "iterations for plain and MORSE (a budget variant name must exist)")
    parser.add_argument("--warm-epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    plain = f"nnUNetTrainer_{_budget(args.epochs)}"
    morse = f"nnUNetTrainerMORSE_{_budget(args.epochs)}"
    warm = f"nnUNetTrainerMORSE_{_budget(args.warm_epochs)}"
    if not args.table_only:
        prepare(root, args.config, args.dataset_id)
        repeats = range(args.repeats)
        for r in repeats:
            for trainer, warm_from in ((plain, None), (morse, None), (warm, plain)):
                train(root, args.dataset_id, trainer, r, warm_from)
        for trainer in (plain, morse, warm):
            for r in repeats:
                score(root, args.dataset_id, trainer, r)
    for subset in ("val", "test"):
        print(table(root, plain, morse, warm, subset), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
