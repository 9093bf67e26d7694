"""The ``morse`` commands around a run: ``calibrate`` (its render budget), ``compare``
(variants x seeds), ``export`` and ``nnunet`` (MORSE inside nnU-Net v2)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from morse.cli.options import option

__all__ = ["Calibrate", "Compare", "Export", "Nnunet", "budget_option"]


def _budget(text: str):
    """argparse type of ``--budget``: refused before anything is loaded."""
    from morse.errors import ConfigError
    from morse.model.budget import parse_budget

    try:
        return parse_budget(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix(f"--budget {text}: ")) from None


def budget_option():
    """``--budget calibrated|default|fixed|MARGIN`` of the commands that predict."""
    return option("render budget: calibrated (the run's measured margin, where `morse "
                  "calibrate` or training stored one; else default), default (the run's "
                  "model.render_margin), fixed (the paper's: no margin) or a margin, e.g. 2.5 "
                  "(default: calibrated)", "--budget", type=_budget, default=None)


def _share(text: str) -> float:
    """argparse type of ``--keep``: a share in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a share in (0, 1], e.g. 0.995; got {text!r}")
    return value


@dataclass
class Calibrate:
    """Measure a trained run's render budget on its validation cases: the smallest coarse-margin
    threshold below which lie --keep of the cells whose label rendering changes (every cell
    rendered, no cap); stored in last.pt, best.pt and RUN/calibration.json, then used by
    evaluate, predict and export."""

    name: ClassVar[str] = "calibrate"
    run_dir: str = option("run folder")
    checkpoint: str | None = option("calibrate only best.pt or last.pt (default: both)",
                                     "--checkpoint", default=None, choices=["best", "last"])
    keep: float = option("share of the cells whose label rendering changes that must lie below "
                         "the margin (default: 0.995)", "--keep", type=_share, default=0.995)
    device: str = option("auto, cpu or cuda", "--device", default="auto")
    threads: int | None = option("CPU threads of torch (default: the run's train.threads)",
                                 "--threads", type=int, default=None)

    def run(self) -> int:
        from morse.inference.calibrate import calibrate_run

        calibrate_run(self.run_dir, checkpoint=self.checkpoint, keep=self.keep,
                      device=self.device, threads=self.threads)
        return 0


def _seed(text: str) -> int:
    """An integer seed; anything else most likely is an override typed after the options."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a seed (an integer); put section.key=value overrides right "
            "after CONFIG, before the options") from None


@dataclass
class Compare:
    """Train and score ablation variants over seeds with one budget, then one table per
    subset: means ± std over seeds, training time, empty-mask counts, and paired differences
    to the plain backbone with seed x case bootstrap intervals. Run it again to resume:
    finished runs are skipped, interrupted ones continue from last.pt."""

    name: ClassVar[str] = "compare"
    config: str = option("config file or preset name")
    output: str = option("comparison folder: DIR/<variant>/seed<k>/ and the table",
                          "-o", "--output", required=True)
    overrides: list[str] = option("section.key=value overrides for every run (before the "
                                   "options)", nargs="*", default_factory=list)
    variants: list[str] | None = option("plain pointrend no-gating no-fourier morse (default: "
                                         "all; --quick: plain morse)", "--variants", nargs="+",
                                         default=None)
    seeds: list[int] | None = option("values of train.seed (default: 0 1 2; --quick: 0)",
                                      "--seeds", nargs="+", type=_seed, default=None)
    subset: list[str] = option("the subsets to score, one table each: val (choose settings), "
                               "test (the split's) or heldout (imagesTs + labelsTs, or "
                               "--images/--labels); report test and heldout once (default: val)",
                               "--subset", nargs="+", default_factory=lambda: ["val"])
    images: str | None = option("held-out scans for --subset heldout (default: the dataset's "
                                 "imagesTs)", "--images", default=None)
    labels: str | None = option("their label maps (default: the dataset's labelsTs)",
                                 "--labels", default=None)
    quick: bool = option("tiny budget and widths (4 steps): proves the harness in seconds",
                          "--quick", default=False, action="store_true")

    def run(self) -> int:
        from morse.experiments.compare import compare

        compare(self.config, self.overrides, output=self.output, variants=self.variants,
                seeds=self.seeds, subsets=self.subset, images=self.images, labels=self.labels,
                quick=self.quick)
        return 0


@dataclass
class Export:
    """Write a run's model (backbone and renderer) as one graph for deployment that takes
    every input size (torch.export's ExportedProgram by default, or ONNX), one size
    (TorchScript), or a MONAI bundle; next to a model file OUT.json: the input it takes
    (channels, sizes, the preprocessing record), the classes, and its check against the
    checkpoint."""

    name: ClassVar[str] = "export"
    source: str = option("run folder or checkpoint")
    output: str = option("the model file to write, e.g. model.pt2 or model.onnx; for "
                          "--format bundle the bundle's folder")
    format: str = option("pt2 (torch.export, any size), onnx (any size; pip install -e "
                          "'.[export]'), torchscript (one size) or bundle (a MONAI bundle)",
                          "--format", default="pt2")
    size: list[int] | None = option("export for this one spatial input size, H W (2D) or X Y Z "
                                     "(3D) (default: every size the backbone takes; "
                                     "TorchScript: data.slice_size in 2D, data.patch_size in "
                                     "3D)", "--size", nargs="+", type=int, default=None)
    checkpoint: str | None = option("export best.pt or last.pt of a run folder (default: the "
                                     "run's eval.checkpoint)", "--checkpoint", default=None,
                                     choices=["best", "last"])
    overwrite: bool = option("replace existing files", "--overwrite", default=False,
                              action="store_true")
    budget: str | float | None = budget_option()

    def run(self) -> int:
        from morse.inference.bundle import write_bundle
        from morse.inference.export import export_run

        options = dict(size=self.size, checkpoint=self.checkpoint, overwrite=self.overwrite,
                       budget=self.budget)
        result = (write_bundle(self.source, self.output, **options) if self.format == "bundle"
                  else export_run(self.source, self.output, fmt=self.format, **options))
        check = ("not checked: onnxruntime is not installed" if result.max_difference is None
                 else f"against the checkpoint on random inputs of two sizes: max |difference| "
                      f"{result.max_difference:.2g}, rendered labels agree on "
                      f"{100 * result.labels_agree:.2f}% of cells")
        print(f"wrote {result.model} and {result.description}; input sizes: "
              f"{result.sizes.text()}; {check}")
        return 0


@dataclass
class Nnunet:
    """MORSE inside nnU-Net v2: 'trainer-dir' prints the folder for nnUNet_extTrainer;
    'install' / 'uninstall' put / remove a module naming MORSE's trainers in nnU-Net's own
    trainer folder (stock nnUNetv2_train then finds them with any torchvision); 'train' and
    'predict' run nnUNetv2_train / nnUNetv2_predict with ARGS unchanged, MORSE's trainers
    found; 'dataset CONFIG --id N' writes a config's data (e.g. the demo) as an nnU-Net raw
    dataset with the config's split as fold 0."""

    name: ClassVar[str] = "nnunet"
    action: str = option("trainer-dir, install, uninstall, train, predict or dataset",
                         choices=["trainer-dir", "install", "uninstall", "train", "predict",
                                  "dataset"])
    args: list[str] = option("arguments for nnUNetv2_train / nnUNetv2_predict, or for dataset",
                              nargs=argparse.REMAINDER, default_factory=list)

    def run(self) -> int:
        from morse.nnunet import launch

        if self.action == "dataset":
            return _nnunet_dataset(self.args)
        if self.action in ("train", "predict"):
            return launch.run_entry(self.action, self.args)
        if self.args:
            raise SystemExit(f"morse nnunet {self.action} takes no arguments")
        launch.check_nnunet()
        if self.action == "trainer-dir":
            print(launch.trainer_dir())
        elif self.action == "install":
            print(f"wrote {launch.install_shim()}; nnUNetv2_train -tr nnUNetTrainerMORSE... "
                  "now finds MORSE's trainers (undo: morse nnunet uninstall)")
        else:
            removed = launch.uninstall_shim()
            print(f"removed {removed}" if removed else "nothing to remove")
        return 0


def _nnunet_dataset(args: list[str]) -> int:
    """``morse nnunet dataset CONFIG [OVERRIDES] --id N [--raw DIR] [--preprocessed DIR]``."""
    import os

    from morse.config import load_config
    from morse.data.nnunet_raw import write_raw_dataset, write_splits

    parser = argparse.ArgumentParser(
        prog="morse nnunet dataset",
        description="Write a config's train/val/test data as an nnU-Net v2 raw dataset "
                    "(imagesTr = train + val, imagesTs = test) with splits_final.json "
                    "holding the config's split as fold 0.")
    parser.add_argument("config", help="config file or preset name, e.g. demo or demo_tissue")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    parser.add_argument("--id", type=int, required=True, dest="dataset_id",
                        help="nnU-Net dataset id (1-999), e.g. 501")
    parser.add_argument("--raw", default=os.environ.get("nnUNet_raw"),
                        help="nnU-Net's raw folder (default: $nnUNet_raw)")
    parser.add_argument("--preprocessed", default=os.environ.get("nnUNet_preprocessed"),
                        help="nnU-Net's preprocessed folder, where nnU-Net reads "
                             "splits_final.json (default: $nnUNet_preprocessed)")
    opts = parser.parse_args(args)
    if not opts.raw:
        parser.error("give --raw DIR or set nnUNet_raw (nnU-Net's raw data folder)")
    folder = write_raw_dataset(load_config(opts.config, opts.overrides), Path(opts.raw),
                               opts.dataset_id)
    print(f"wrote {folder}")
    if opts.preprocessed:
        splits = json.loads((folder / "splits_final.json").read_text())[0]
        path = write_splits(Path(opts.preprocessed) / folder.name, splits["train"],
                            splits["val"])
        print(f"wrote {path} (fold 0 = the config's train/val split)")
    else:
        print(f"copy {folder / 'splits_final.json'} to $nnUNet_preprocessed/{folder.name}/ "
              "before training, or nnU-Net makes its own 5 folds")
    return 0
