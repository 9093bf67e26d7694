"""The ``morse`` commands around a run: ``compare`` (variants x seeds), ``export`` and
``nnunet`` (MORSE inside nnU-Net v2)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import ClassVar

from morse.cli.options import option

__all__ = ["Compare", "Export", "Nnunet"]


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
    """Train and score ablation variants over seeds with one budget, then one table: means ±
    std over seeds and paired bootstrap differences to the plain backbone. Run it again to
    resume: finished runs are skipped, interrupted ones continue from last.pt."""

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
    subset: str = option("score on val (choose settings) or test (report once)", "--subset",
                          default="val", choices=["val", "test"])
    quick: bool = option("tiny budget and widths (4 steps): proves the harness in seconds",
                          "--quick", default=False, action="store_true")

    def run(self) -> int:
        from morse.experiments.compare import compare

        compare(self.config, self.overrides, output=self.output, variants=self.variants,
                seeds=self.seeds, subset=self.subset, quick=self.quick)
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

    def run(self) -> int:
        from morse.inference.export import export_run

        result = export_run(self.source, self.output, fmt=self.format, size=self.size,
                            checkpoint=self.checkpoint, overwrite=self.overwrite)
        check = ("not checked: onnxruntime is not installed" if result.max_difference is None
                 else f"against the checkpoint on random inputs of two sizes: max |difference| "
                      f"{result.max_difference:.2g}, rendered labels agree on "
                      f"{100 * result.labels_agree:.2f}% of cells")
        print(f"wrote {result.model} and {result.description}; input sizes: "
              f"{result.sizes.text()}; {check}")
        return 0


@dataclass
class Nnunet:
    """MORSE inside nnU-Net v2: 'trainer-dir' prints the folder for nnUNet_extTrainer; 'train'
    and 'predict' run nnUNetv2_train / nnUNetv2_predict with ARGS unchanged, MORSE's trainers
    found (e.g. -tr nnUNetTrainerMORSE) and nnU-Net trainers that cannot import skipped."""

    name: ClassVar[str] = "nnunet"
    action: str = option("trainer-dir, train or predict",
                          choices=["trainer-dir", "train", "predict"])
    args: list[str] = option("arguments for nnUNetv2_train / nnUNetv2_predict",
                              nargs=argparse.REMAINDER, default_factory=list)

    def run(self) -> int:
        from morse.nnunet.launch import check_nnunet, run_entry, trainer_dir

        if self.action == "trainer-dir":
            if self.args:
                raise SystemExit("morse nnunet trainer-dir takes no arguments")
            check_nnunet()
            print(trainer_dir())
            return 0
        return run_entry(self.action, self.args)
