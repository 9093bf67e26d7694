"""The ``morse`` command line: one dataclass per subcommand, each with a ``run()``.

    morse train CONFIG [section.key=value ...] [-o RUN_DIR] | morse train --resume RUN_DIR
    morse evaluate RUN_DIR_or_CHECKPOINT [--data ROOT] [--subset all|test|val|heldout]
                   [--images DIR --labels DIR] [-o OUT] [--tta]
    morse predict CHECKPOINT INPUT... -o OUT_DIR [--probabilities] [--points] [--coarse] [--tta]
    morse score PREDICTIONS LABELS [-o OUT] [--classes K] [--allow-missing] [--nsd MM ...]
                [--biou MM]
    morse check DATA
    morse demo [-o RUN_DIR]
    morse report RUN_DIR [--format html|md]
    morse config PRESET_OR_FILE [section.key=value ...]
    morse compare CONFIG [section.key=value ...] -o DIR [--variants V ...] [--seeds K ...]
                  [--subset val|test] [--quick]
    morse export RUN_DIR_or_CHECKPOINT OUT [--format torchscript|onnx] [--size N ...]
    morse nnunet trainer-dir | train ARGS... | predict ARGS...

Bad input ends with one line on stderr naming the file and the problem, and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import math
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["main"]


def _option(help: str, *flags: str, **kwargs: Any) -> Any:
    """A dataclass field that documents itself and becomes an argparse argument."""
    default = kwargs.pop("default", dataclasses.MISSING)
    factory = kwargs.pop("default_factory", dataclasses.MISSING)
    metadata = {"help": help, "flags": flags, "argparse": kwargs}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


_TTA_HELP = ("flip test-time augmentation: the backbone's logits averaged over the 2^D "
             "mirrorings, then rendered; 2^D backbone passes (default: the run's eval.tta)")


@dataclass
class Train:
    """Train a model (or resume a run) from a YAML config or preset."""

    name: ClassVar[str] = "train"
    config: str | None = _option("config file or preset name", nargs="?", default=None)
    overrides: list[str] = _option("section.key=value overrides", nargs="*", default_factory=list)
    output: str | None = _option("run folder (default runs/<name>)", "-o", "--output",
                                 default=None)
    resume: str | None = _option("resume the run in this folder", "--resume", default=None)

    def run(self) -> int:
        from morse.config import load_config
        from morse.training.loop import train

        if self.resume:
            requested = self._resume_request()
            result = train(requested, self.resume, resume=True)  # type: ignore[arg-type]
        else:
            if not self.config:
                raise SystemExit("morse train: give a CONFIG (file or preset) or --resume RUN_DIR")
            if Path(self.config).is_dir():
                raise SystemExit(f"morse train: {self.config} is a folder; give a CONFIG file or "
                                 f"preset, or continue a run with --resume {self.config}")
            cfg = load_config(self.config, self.overrides)
            result = train(cfg, self.output or Path("runs") / cfg.name)
        best = (f"best validation Dice {result.best_dice:.4f}" if math.isfinite(result.best_dice)
                else "no validation cases: evaluate last.pt")
        print(f"trained {result.step} steps in {result.seconds:.0f} s; {best}; "
              f"run folder {result.run_dir}")
        return 0

    def _resume_request(self):
        """The config given with --resume (checked against the saved one), or None."""
        from morse.config import load_config

        if self.config and "=" in self.config and not Path(self.config).exists():
            raise SystemExit(f"morse train: --resume continues the run as it was saved; "
                             f"overrides ({self.config}) are not applied; start a new run "
                             "(-o NEW_FOLDER) to train with other settings")
        return load_config(self.config, self.overrides) if self.config else None


@dataclass
class Evaluate:
    """Dice, IoU, HD95 and ASD of the coarse and rendered outputs on whole volumes: the
    split's test subset and the held-out imagesTs + labelsTs (or --images/--labels)."""

    name: ClassVar[str] = "evaluate"
    source: str = _option("run folder or checkpoint")
    data: str | None = _option("dataset folder (default: the run's)", "--data", default=None)
    subset: str = _option("all: the split's test subset and the held-out set; test or val: "
                          "that subset of the split; heldout: the held-out set only",
                          "--subset", default="all", choices=["all", "test", "val", "heldout"])
    images: str | None = _option("held-out scans (default: the dataset's imagesTs)", "--images",
                                 default=None)
    labels: str | None = _option("their label maps (default: the dataset's labelsTs)",
                                 "--labels", default=None)
    output: str | None = _option("results folder (default: the run folder for test, "
                                 "RUN/eval_val for val, RUN/eval_<images folder> for the "
                                 "held-out set)", "-o", "--output", default=None)
    device: str = _option("auto, cpu or cuda", "--device", default="auto")
    checkpoint: str | None = _option("score best.pt or last.pt of a run folder (default: the "
                                     "run's eval.checkpoint)", "--checkpoint", default=None,
                                     choices=["best", "last"])
    tta: bool | None = _option(_TTA_HELP, "--tta", action=argparse.BooleanOptionalAction,
                               default=None)

    def run(self) -> int:
        from morse.evaluation.heldout import evaluate_run

        evaluate_run(self.source, self.output, subset=self.subset, data_root=self.data,
                     images=self.images, labels=self.labels, device=self.device,
                     checkpoint=self.checkpoint, tta=self.tta)
        return 0


@dataclass
class Predict:
    """Segment NIfTI scans; label maps keep each input's grid, affine and header."""

    name: ClassVar[str] = "predict"
    checkpoint: str = _option("run folder or checkpoint")
    inputs: list[str] = _option("NIfTI files (nnU-Net channel files are grouped)", nargs="+")
    output: str = _option("output folder", "-o", "--output", required=True)
    probabilities: bool = _option("also write CASE_probabilities.nii.gz", "--probabilities",
                                  default=False, action="store_true")
    points: bool = _option("also write CASE_points.nii.gz (rendered voxels)", "--points",
                           default=False, action="store_true")
    coarse: bool = _option("also write CASE_coarse.nii.gz (the backbone's label map)",
                           "--coarse", default=False, action="store_true")
    overwrite: bool = _option("replace existing outputs", "--overwrite", default=False,
                              action="store_true")
    device: str = _option("auto, cpu or cuda", "--device", default="auto")
    tta: bool | None = _option(_TTA_HELP, "--tta", action=argparse.BooleanOptionalAction,
                               default=None)

    def run(self) -> int:
        from morse.inference.files import predict_files

        for path in predict_files(self.checkpoint, self.inputs, self.output,
                                  probabilities=self.probabilities, points=self.points,
                                  coarse=self.coarse, overwrite=self.overwrite,
                                  device=self.device, tta=self.tta):
            print(path)
        return 0


@dataclass
class ConfigCommand:
    """Print a preset or config file, resolved with overrides, one documented line per key."""

    name: ClassVar[str] = "config"
    config: str = _option("config file or preset name")
    overrides: list[str] = _option("section.key=value overrides", nargs="*", default_factory=list)

    def run(self) -> int:
        from morse.config import describe_config, load_config

        print(describe_config(load_config(self.config, self.overrides)))
        return 0


@dataclass
class Score:
    """Score a folder of label maps (any tool's NIfTI) against reference label maps, matched
    by case name; writes metrics.json and metrics.csv."""

    name: ClassVar[str] = "score"
    predictions: str = _option("folder of predicted label maps (CASE.nii.gz)")
    labels: str = _option("folder of reference label maps (CASE.nii.gz)")
    output: str | None = _option("results folder (default: the predictions folder)", "-o",
                                 "--output", default=None)
    classes: int | None = _option("number of classes K with background (default: dataset.json "
                                  "next to LABELS, else the largest label found)", "--classes",
                                  type=int, default=None)
    allow_missing: bool = _option("score the cases found in both folders and record the others "
                                  "(default: refuse)", "--allow-missing", default=False,
                                  action="store_true")
    nsd: list[float] | None = _option("normalised surface Dice tolerances in mm (default: 1 2)",
                                      "--nsd", nargs="+", type=float, default=None)
    biou: float | None = _option("boundary IoU band width in mm (default: 2)", "--biou",
                                 type=float, default=None)

    def run(self) -> int:
        from morse.evaluation.score import flag_settings, score_folders

        score_folders(self.predictions, self.labels, self.output or self.predictions,
                      classes=self.classes, allow_missing=self.allow_missing,
                      settings=flag_settings(self.nsd, self.biou))
        return 0


@dataclass
class Check:
    """Check an nnU-Net / Decathlon dataset folder; lists every problem found."""

    name: ClassVar[str] = "check"
    data: str = _option("dataset folder")

    def run(self) -> int:
        from morse.data.check import inspect_dataset

        result = inspect_dataset(self.data)
        for problem in result.problems:
            print(problem)
        print(result.summary())
        return 1 if result.problems else 0


@dataclass
class Demo:
    """Train, evaluate and report MORSE on the Colin27 brain with the AAL atlas (CPU)."""

    name: ClassVar[str] = "demo"
    output: str = _option("run folder", "-o", "--output", default="runs/demo")
    overrides: list[str] = _option("section.key=value overrides", nargs="*",
                                   default_factory=list)

    def run(self) -> int:
        from morse.cli.demo import run_demo

        run_demo(self.output, self.overrides)
        return 0


@dataclass
class Report:
    """Write a self-contained HTML (or Markdown) report of a run."""

    name: ClassVar[str] = "report"
    run_dir: str = _option("run folder")
    format: str = _option("html or md", "--format", default="html", choices=["html", "md"])

    def run(self) -> int:
        from morse.cli.demo import write_run_report

        print(write_run_report(self.run_dir, self.format))
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
    """Train and score ablation variants over seeds with one budget, then one table: means ±
    std over seeds and paired bootstrap differences to the plain backbone. Run it again to
    resume: finished runs are skipped, interrupted ones continue from last.pt."""

    name: ClassVar[str] = "compare"
    config: str = _option("config file or preset name")
    output: str = _option("comparison folder: DIR/<variant>/seed<k>/ and the table",
                          "-o", "--output", required=True)
    overrides: list[str] = _option("section.key=value overrides for every run (before the "
                                   "options)", nargs="*", default_factory=list)
    variants: list[str] | None = _option("plain pointrend no-gating no-fourier morse (default: "
                                         "all; --quick: plain morse)", "--variants", nargs="+",
                                         default=None)
    seeds: list[int] | None = _option("values of train.seed (default: 0 1 2; --quick: 0)",
                                      "--seeds", nargs="+", type=_seed, default=None)
    subset: str = _option("score on val (choose settings) or test (report once)", "--subset",
                          default="val", choices=["val", "test"])
    quick: bool = _option("tiny budget and widths (4 steps): proves the harness in seconds",
                          "--quick", default=False, action="store_true")

    def run(self) -> int:
        from morse.experiments.compare import compare

        compare(self.config, self.overrides, output=self.output, variants=self.variants,
                seeds=self.seeds, subset=self.subset, quick=self.quick)
        return 0


@dataclass
class Export:
    """Write a run's model (backbone and renderer) as one TorchScript or ONNX graph for
    deployment, and next to it OUT.json: the input it takes (channels, size, the
    preprocessing record), the classes, and its check against the checkpoint."""

    name: ClassVar[str] = "export"
    source: str = _option("run folder or checkpoint")
    output: str = _option("the model file to write, e.g. model.pt (TorchScript) or model.onnx")
    format: str = _option("torchscript or onnx (ONNX needs pip install -e '.[export]')",
                          "--format", default="torchscript")
    size: list[int] | None = _option("spatial input size, H W (2D) or X Y Z (3D) (default: "
                                     "data.slice_size in 2D, data.patch_size in 3D)", "--size",
                                     nargs="+", type=int, default=None)
    checkpoint: str | None = _option("export best.pt or last.pt of a run folder (default: the "
                                     "run's eval.checkpoint)", "--checkpoint", default=None,
                                     choices=["best", "last"])
    overwrite: bool = _option("replace existing files", "--overwrite", default=False,
                              action="store_true")

    def run(self) -> int:
        from morse.inference.export import export_run

        result = export_run(self.source, self.output, fmt=self.format, size=self.size,
                            checkpoint=self.checkpoint, overwrite=self.overwrite)
        check = ("not checked: onnxruntime is not installed" if result.max_difference is None
                 else f"against the checkpoint on a random input: max |difference| "
                      f"{result.max_difference:.2g}, rendered labels agree on "
                      f"{100 * result.labels_agree:.2f}% of cells")
        print(f"wrote {result.model} and {result.description}; {check}")
        return 0


@dataclass
class Nnunet:
    """MORSE inside nnU-Net v2: 'trainer-dir' prints the folder for nnUNet_extTrainer; 'train'
    and 'predict' run nnUNetv2_train / nnUNetv2_predict with ARGS unchanged, MORSE's trainers
    found (e.g. -tr nnUNetTrainerMORSE) and nnU-Net trainers that cannot import skipped."""

    name: ClassVar[str] = "nnunet"
    action: str = _option("trainer-dir, train or predict",
                          choices=["trainer-dir", "train", "predict"])
    args: list[str] = _option("arguments for nnUNetv2_train / nnUNetv2_predict",
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


COMMANDS = (Train, Evaluate, Predict, Score, Check, Demo, Report, ConfigCommand, Compare, Export,
            Nnunet)


def _version() -> str:
    """The installed distribution's version (the wheel's), else the package's own."""
    try:
        return metadata.version("morse-seg")
    except metadata.PackageNotFoundError:
        from morse import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="morse", description="MORSE: implicit anatomical rendering for segmentation."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        child = sub.add_parser(command.name, help=command.__doc__, description=command.__doc__)
        for item in dataclasses.fields(command):
            meta = item.metadata
            kwargs = dict(meta["argparse"], help=meta["help"])
            if item.default is not dataclasses.MISSING:
                kwargs.setdefault("default", item.default)
            elif item.default_factory is not dataclasses.MISSING:
                kwargs.setdefault("default", item.default_factory())
            if meta["flags"]:
                child.add_argument(*meta["flags"], dest=item.name, **kwargs)
            else:
                child.add_argument(item.name, **kwargs)
        child.set_defaults(command_class=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``morse`` console script and ``python -m morse``."""
    from morse.errors import MorseError

    args = vars(build_parser().parse_args(argv))
    command_class = args.pop("command_class")
    args.pop("command")
    try:
        return command_class(**args).run()
    except MorseError as error:
        print(f"morse {command_class.name}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, a read-only folder, a file where a folder goes
        print(f"morse {command_class.name}: error: {_os_error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"morse {command_class.name}: interrupted", file=sys.stderr)
        return 130


def _os_error_line(error: OSError) -> str:
    """One line for an operating-system error: the file, what went wrong, and for the usual
    causes what to do."""
    if error.filename is None or isinstance(error, FileExistsError):
        return str(error)
    where = error.filename if error.filename2 is None else f"{error.filename} -> {error.filename2}"
    fixes = {
        errno.ENOSPC: "free some space or write elsewhere (-o)",
        errno.EACCES: "check the folder's permissions or write elsewhere (-o)",
        errno.EROFS: "the file system is read-only; write elsewhere (-o)",
        errno.ENOTDIR: "a file stands where a folder is needed; choose another path",
    }
    fix = fixes.get(error.errno)
    return f"{where}: {error.strerror or error}" + (f"; {fix}" if fix else "")


if __name__ == "__main__":
    sys.exit(main())
