"""The demo: MORSE on real anatomy (Colin27 T1 MRI, AAL atlas grouped into regions), on a CPU."""

from __future__ import annotations

import time
from pathlib import Path

from morse.config import load_config
from morse.errors import DataError
from morse.evaluation.evaluate import evaluate
from morse.io.checkpoint import LAST_NAME, load_checkpoint
from morse.training.loop import train

__all__ = ["run_demo", "write_run_report"]


def run_demo(output: str | Path = "runs/demo", overrides: list[str] | None = None) -> dict:
    """Train (or finish training), evaluate on the held-out slab, and write the report.

    Re-running continues an interrupted demo from its last checkpoint.
    """
    output = Path(output)
    started = time.perf_counter()
    cfg = load_config("demo", overrides)
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
