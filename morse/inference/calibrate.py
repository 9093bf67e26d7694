"""``morse calibrate RUN``: measure a trained run's render budget on its validation cases and
store it in its checkpoints and ``calibration.json`` (:mod:`morse.model.calibration`).

Training does the same at its end; this command calibrates a run trained before, or again
(e.g. with another ``--keep``). The volumes are the split's validation subset on the
network's grid, as training's validation sees them.
"""

from __future__ import annotations

from pathlib import Path

from morse.data.geometry import to_network
from morse.data.prepare import load_eval_volumes
from morse.device import resolve_device, set_threads
from morse.errors import DataError
from morse.inference.trained import TrainedRun, load_run
from morse.io.checkpoint import BEST_NAME, LAST_NAME
from morse.io.lock import FolderLock
from morse.model.calibration import KEEP, calibrate_files
from morse.model.settings import InferenceConfig

__all__ = ["calibrate_run"]


def _checkpoint_files(run_dir: Path, which: str | None) -> list[str]:
    """The run's checkpoint files to calibrate (``which``: "best" or "last" only)."""
    if not run_dir.is_dir():
        what = "is a file; give the run folder that holds it" if run_dir.exists() else (
            "no such run folder")
        raise DataError(f"{run_dir}: {what} (morse calibrate RUN_DIR)")
    names = [name for name in (LAST_NAME, BEST_NAME)
             if which is None or name == f"{which}.pt"]
    found = [name for name in names if (run_dir / name).is_file()]
    if not found:
        raise DataError(f"{run_dir}: no {' or '.join(names)} in this run folder; train it first "
                        f"(morse train CONFIG -o {run_dir})")
    return found


def calibrate_run(
    run_dir: str | Path,
    *,
    checkpoint: str | None = None,
    keep: float = KEEP,
    device: str = "auto",
    threads: int | None = None,
    say=print,
) -> dict[str, dict]:
    """Calibrate last.pt and best.pt of a run folder (or the one ``checkpoint`` names).

    Returns ``{file name: calibration record}`` of the files written ({} when the run has no
    validation case or nothing flipped; ``say`` gets one line on why).

    Raises:
        DataError: not a run folder, no checkpoint in it, a run without renderer, ``keep``
            outside (0, 1].
        FolderBusyError: another process (e.g. its training) holds the folder.
    """
    run_dir = Path(run_dir)
    if not 0 < keep <= 1:
        raise DataError(f"--keep {keep}: give the share of flipped cells to keep, in (0, 1], "
                        "e.g. 0.995")
    names = _checkpoint_files(run_dir, checkpoint)
    torch_device = resolve_device(device)
    with FolderLock(run_dir, "morse calibrate"):
        runs = {name: load_run(run_dir / name, torch_device, budget="default") for name in names}
        first = next(iter(runs.values()))
        if first.model.renderer is None:
            raise DataError(f"{first.path}: the renderer is off (model.renderer=false); there is "
                            "no render budget to calibrate")
        set_threads(threads if threads is not None else first.config.train.threads)
        volumes = _network_volumes(first, run_dir)
        files = {name: (run.step, lambda run=run: run.model) for name, run in runs.items()}
        return calibrate_files(
            run_dir, files, lambda: ((volume.image, None) for volume in volumes),
            InferenceConfig.from_config(first.config, torch_device),
            first.config.model.render_margin, say, keep)


def _network_volumes(run: TrainedRun, run_dir: Path) -> list:
    """The validation cases normalised and on the network's grid, as training saw them."""
    volumes = load_eval_volumes(run.config.data, "val", run.preprocessing,
                                saved_split=run_dir / "split.json")
    if run.geometry is None:
        return volumes
    return [to_network(volume, run.geometry) for volume in volumes]
