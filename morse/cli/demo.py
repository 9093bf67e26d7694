"""The demo: MORSE on real anatomy on a CPU, with the atlas it can find.

========= =========== ==============================================================
task      preset      data
========= =========== ==============================================================
atlas     demo        Colin27 T1 with the AAL atlas in 10 regions (Debian's mricron-data)
tissue    demo_tissue MNI152 2009 T1 with grey and white matter (nilearn's wheel)
========= =========== ==============================================================

``auto`` takes the atlas task where mricron-data is installed, the tissue task otherwise.
"""

from __future__ import annotations

import time
from pathlib import Path

from morse.config import load_config
from morse.data.atlas_demo import DEFAULT_TEMPLATE_DIR
from morse.errors import DataError
from morse.evaluation.evaluate import evaluate
from morse.io.checkpoint import LAST_NAME, load_checkpoint
from morse.training.loop import train

__all__ = ["DEMO_TASKS", "choose_demo_task", "run_demo", "write_run_report"]

DEMO_TASKS = {  # task: (preset, default run folder, what it is)
    "atlas": ("demo", "runs/demo", "Colin27 T1 with AAL regions, from Debian's mricron-data"),
    "tissue": ("demo_tissue", "runs/demo-tissue",
               "MNI152 2009 T1 with grey and white matter, from nilearn"),
}
_ATLAS_FILES = ("ch2.nii.gz", "aal.nii.gz", "aal.nii.txt")


def choose_demo_task(task: str = "auto") -> tuple[str, str]:
    """The demo task to run and the one line that says which and why.

    Args:
        task: ``atlas``, ``tissue`` or ``auto`` (atlas where mricron-data is installed).
    """
    if task not in ("auto", *DEMO_TASKS):
        raise DataError(f"demo task {task!r} is unknown; choose auto, atlas or tissue")
    why = ""
    if task == "auto":
        found = all((DEFAULT_TEMPLATE_DIR / name).is_file() for name in _ATLAS_FILES)
        task = "atlas" if found else "tissue"
        why = ("; --task tissue for the MNI152 tissues" if found else
               f"; Colin27 + AAL (mricron-data) not in {DEFAULT_TEMPLATE_DIR}")
    return task, f"demo task: {task} ({DEMO_TASKS[task][2]}){why}"


def run_demo(output: str | Path | None = None, overrides: list[str] | None = None,
             task: str = "auto") -> dict:
    """Train (or finish training), evaluate on the held-out part, and write the report.

    Args:
        output: run folder; None: the task's own (``runs/demo``, ``runs/demo-tissue``).
        overrides: ``section.key=value`` overrides of the task's preset.
        task: ``atlas``, ``tissue`` or ``auto`` (see :func:`choose_demo_task`).

    Re-running continues an interrupted demo from its last checkpoint.
    """
    task, line = choose_demo_task(task)
    print(line)
    preset, default_output, _ = DEMO_TASKS[task]
    output = Path(default_output if output is None else output)
    started = time.perf_counter()
    cfg = load_config(preset, overrides)
    last = output / LAST_NAME
    if last.exists():
        done = int(load_checkpoint(last).get("step", 0))
        if done < cfg.train.iterations:
            print(f"resuming the demo in {output} from step {done}")
            train(cfg, output, resume=True)
        else:
            print(f"{output} already holds a trained demo; evaluating it again")
    else:
        train(cfg, output)
    summaries = evaluate(output, output, subset="test")
    report = write_run_report(output)
    minutes = (time.perf_counter() - started) / 60
    print(f"demo finished in {minutes:.1f} min; report: {report}")
    return summaries


def write_run_report(run_dir: str | Path, fmt: str = "html") -> Path:
    """The run's report page (metrics, curves, overlays) as HTML or Markdown."""
    from morse.report.page import write_report

    if not Path(run_dir).is_dir():
        raise DataError(f"{run_dir}: no such run folder; give the folder `morse train` wrote")
    return write_report(run_dir, fmt=fmt)
