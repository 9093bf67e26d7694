"""The ``morse`` command line: one dataclass per subcommand, each with a ``run()``.

    morse train CONFIG [section.key=value ...] [-o RUN_DIR] | morse train --resume RUN_DIR
    morse evaluate RUN_DIR_or_CHECKPOINT [--data ROOT] [--subset all|test|val|heldout]
                   [--images DIR --labels DIR] [-o OUT] [--tta]
    morse predict CHECKPOINT INPUT... -o OUT_DIR [--probabilities] [--points] [--coarse] [--tta]
    morse score PREDICTIONS LABELS [-o OUT] [--classes K] [--allow-missing] [--nsd MM ...]
                [--biou MM] [--suffix _coarse]
    morse check DATA
    morse demo [--task auto|atlas|tissue] [section.key=value ...] [-o RUN_DIR]
    morse report RUN_DIR [--format html|md]
    morse config PRESET_OR_FILE [section.key=value ...]
    morse compare CONFIG [section.key=value ...] -o DIR [--variants V ...] [--seeds K ...]
                  [--subset val|test|heldout ...] [--images DIR --labels DIR] [--quick]
    morse export RUN_DIR_or_CHECKPOINT OUT [--format torchscript|onnx] [--size N ...]
    morse nnunet trainer-dir | train ARGS... | predict ARGS...

Bad input ends with one line on stderr naming the file and the problem, and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import ClassVar

from morse.cli.errors import os_error_line
from morse.cli.options import option
from morse.cli.tools import Compare, Export, Nnunet

__all__ = ["main"]


_THREADS_HELP = "CPU threads of torch (default: the run's train.threads)"


def _positive_int(text: str) -> int:
    """argparse type of a count: an integer >= 1, refused before anything is loaded."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


_TTA_HELP = ("flip test-time augmentation: the backbone's logits averaged over the 2^D "
             "mirrorings, then rendered; 2^D backbone passes (default: the run's eval.tta)")


@dataclass
class Train:
    """Train a model (or resume a run) from a YAML config or preset."""

    name: ClassVar[str] = "train"
    config: str | None = option("config file or preset name", nargs="?", default=None)
    overrides: list[str] = option("section.key=value overrides", nargs="*", default_factory=list)
    output: str | None = option("run folder (default runs/<name>)", "-o", "--output",
                                 default=None)
    resume: str | None = option("resume the run in this folder", "--resume", default=None)

    def run(self) -> int:
        from morse.config import load_config
        from morse.errors import ConfigError
        from morse.training.loop import train

        if self.resume:
            requested = self._resume_request()
            result = train(requested, self.resume, resume=True)  # type: ignore[arg-type]
        else:
            if not self.config:
                raise SystemExit("morse train: give a CONFIG (file or preset) or --resume RUN_DIR")
            if Path(self.config).is_dir():
                raise ConfigError(f"{self.config} is a folder; give a CONFIG file or preset, or "
                                  f"continue a run with --resume {self.config}")
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
        from morse.errors import ConfigError

        if self.config and "=" in self.config and not Path(self.config).exists():
            raise ConfigError(f"--resume continues the run as it was saved; overrides "
                              f"({self.config}) are not applied; start a new run "
                              "(-o NEW_FOLDER) to train with other settings")
        return load_config(self.config, self.overrides) if self.config else None


@dataclass
class Evaluate:
    """Dice, IoU, HD95 and ASD of the coarse and rendered outputs on whole volumes: the
    split's test subset and the held-out imagesTs + labelsTs (or --images/--labels)."""

    name: ClassVar[str] = "evaluate"
    source: str = option("run folder or checkpoint")
    data: str | None = option("dataset folder (default: the run's)", "--data", default=None)
    subset: str = option("all: the split's test subset and the held-out set; test or val: "
                          "that subset of the split; heldout: the held-out set only",
                          "--subset", default="all", choices=["all", "test", "val", "heldout"])
    images: str | None = option("held-out scans (default: the dataset's imagesTs)", "--images",
                                 default=None)
    labels: str | None = option("their label maps (default: the dataset's labelsTs)",
                                 "--labels", default=None)
    output: str | None = option("results folder (default: the run folder for test, "
                                 "RUN/eval_val for val, RUN/eval_<images folder> for the "
                                 "held-out set)", "-o", "--output", default=None)
    device: str = option("auto, cpu or cuda", "--device", default="auto")
    checkpoint: str | None = option("score best.pt or last.pt of a run folder (default: the "
                                     "run's eval.checkpoint)", "--checkpoint", default=None,
                                     choices=["best", "last"])
    tta: bool | None = option(_TTA_HELP, "--tta", action=argparse.BooleanOptionalAction,
                               default=None)
    threads: int | None = option(_THREADS_HELP, "--threads", type=_positive_int,
                                 default=None)

    def run(self) -> int:
        from morse.evaluation.heldout import evaluate_run

        evaluate_run(self.source, self.output, subset=self.subset, data_root=self.data,
                     images=self.images, labels=self.labels, device=self.device,
                     checkpoint=self.checkpoint, tta=self.tta, threads=self.threads)
        return 0


@dataclass
class Predict:
    """Segment NIfTI scans; label maps keep each input's grid, affine and header."""

    name: ClassVar[str] = "predict"
    checkpoint: str = option("run folder or checkpoint")
    inputs: list[str] = option("NIfTI files (nnU-Net channel files are grouped)", nargs="+")
    output: str = option("output folder", "-o", "--output", required=True)
    probabilities: bool = option("also write CASE_probabilities.nii.gz", "--probabilities",
                                  default=False, action="store_true")
    points: bool = option("also write CASE_points.nii.gz (rendered voxels)", "--points",
                           default=False, action="store_true")
    coarse: bool = option("also write CASE_coarse.nii.gz (the backbone's label map)",
                           "--coarse", default=False, action="store_true")
    overwrite: bool = option("replace existing outputs", "--overwrite", default=False,
                              action="store_true")
    device: str = option("auto, cpu or cuda", "--device", default="auto")
    tta: bool | None = option(_TTA_HELP, "--tta", action=argparse.BooleanOptionalAction,
                               default=None)
    threads: int | None = option(_THREADS_HELP, "--threads", type=_positive_int,
                                 default=None)

    def run(self) -> int:
        from morse.inference.files import predict_files

        for path in predict_files(self.checkpoint, self.inputs, self.output,
                                  probabilities=self.probabilities, points=self.points,
                                  coarse=self.coarse, overwrite=self.overwrite,
                                  device=self.device, tta=self.tta, threads=self.threads):
            print(path)
        return 0


@dataclass
class ConfigCommand:
    """Print a preset or config file, resolved with overrides, one documented line per key."""

    name: ClassVar[str] = "config"
    config: str = option("config file or preset name")
    overrides: list[str] = option("section.key=value overrides", nargs="*", default_factory=list)

    def run(self) -> int:
        from morse.config import describe_config, load_config

        print(describe_config(load_config(self.config, self.overrides)))
        return 0


@dataclass
class Score:
    """Score a folder of label maps (any tool's NIfTI) against reference label maps, matched
    by case name; writes metrics.json and metrics.csv."""

    name: ClassVar[str] = "score"
    predictions: str = option("folder of predicted label maps (CASE.nii.gz)")
    labels: str = option("folder of reference label maps (CASE.nii.gz)")
    output: str | None = option("results folder (default: the predictions folder; "
                                 "PREDICTIONS/score_coarse with --suffix _coarse)", "-o",
                                 "--output", default=None)
    classes: int | None = option("number of classes K with background (default: dataset.json "
                                  "next to LABELS, else the largest label found)", "--classes",
                                  type=int, default=None)
    allow_missing: bool = option("score the cases found in both folders and record the others "
                                  "(default: refuse)", "--allow-missing", default=False,
                                  action="store_true")
    nsd: list[float] | None = option("normalised surface Dice tolerances in mm (default: 1 2)",
                                      "--nsd", nargs="+", type=float, default=None)
    biou: float | None = option("boundary IoU band width in mm (default: 2)", "--biou",
                                 type=float, default=None)
    suffix: str = option("score the maps named CASE<SUFFIX> against the references CASE, e.g. "
                         "_coarse for the CASE_coarse.nii.gz of predict --coarse (default: "
                         "the label maps CASE.nii.gz)", "--suffix", default="")

    def run(self) -> int:
        from morse.evaluation.score import default_output, flag_settings, score_folders

        out = self.output or default_output(self.predictions, self.suffix)
        score_folders(self.predictions, self.labels, out, classes=self.classes,
                      allow_missing=self.allow_missing,
                      settings=flag_settings(self.nsd, self.biou), suffix=self.suffix)
        return 0


@dataclass
class Check:
    """Check an nnU-Net / Decathlon dataset folder; lists every problem found."""

    name: ClassVar[str] = "check"
    data: str = option("dataset folder")

    def run(self) -> int:
        from morse.data.check import inspect_dataset

        result = inspect_dataset(self.data)
        for problem in result.problems:
            print(problem)
        print(result.summary())
        return 1 if result.problems else 0


@dataclass
class Demo:
    """Train, evaluate and report MORSE on a brain MRI (CPU): Colin27 with the AAL atlas where
    mricron-data is installed, else the MNI152 template's grey and white matter."""

    name: ClassVar[str] = "demo"
    output: str | None = option("run folder (default runs/demo, runs/demo-tissue)", "-o",
                                "--output", default=None)
    task: str = option("which demo: auto, atlas (Colin27 + AAL) or tissue (MNI152)", "--task",
                       default="auto", choices=["auto", "atlas", "tissue"])
    overrides: list[str] = option("section.key=value overrides", nargs="*",
                                   default_factory=list)

    def run(self) -> int:
        from morse.cli.demo import run_demo

        run_demo(self.output, self.overrides, self.task)
        return 0


@dataclass
class Report:
    """Write a self-contained HTML (or Markdown) report of a run."""

    name: ClassVar[str] = "report"
    run_dir: str = option("run folder")
    format: str = option("html or md", "--format", default="html", choices=["html", "md"])

    def run(self) -> int:
        from morse.cli.demo import write_run_report

        print(write_run_report(self.run_dir, self.format))
        return 0


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
        print(f"morse {command_class.name}: error: {os_error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"morse {command_class.name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
