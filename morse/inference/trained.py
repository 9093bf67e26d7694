"""A trained run as a model: find its checkpoint, rebuild the model safely, predict cases."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from morse.config import Config, config_from_dict, load_config
from morse.data.geometry import network_axes, to_network
from morse.data.volume import Volume
from morse.errors import CheckpointError, DataError
from morse.io.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    load_checkpoint,
    validate_checkpoint,
)
from morse.model import Morse
from morse.model.budget import Budget, budget_config, describe_budget
from morse.model.build import build_model
from morse.model.settings import InferenceConfig
from morse.model.volumes import VolumePrediction, predict_volume

__all__ = ["TrainedRun", "load_run", "resolve_checkpoint", "predict_case"]


def resolve_checkpoint(source: str | Path, which: str | None = None) -> Path:
    """A checkpoint file as given, or the one of a run folder to score.

    Args:
        source: a checkpoint file or a run folder.
        which: "best" or "last" for a run folder; default the run's ``eval.checkpoint``
            (read from its ``config.yaml``; "best" when that file is missing).
    """
    source = Path(source)
    if source.is_file():
        return source
    if not source.is_dir():
        raise DataError(f"{source}: no such checkpoint or run folder")
    which = which or _recorded_choice(source)
    name = {"best": BEST_NAME, "last": LAST_NAME}.get(which)
    if name is None:
        raise DataError(f"checkpoint choice {which!r} is unknown; use best or last")
    if not (source / name).is_file():
        fix = "train it first" if which == "last" else "score last.pt with --checkpoint last"
        raise DataError(f"{source}: no {name} in this run folder; {fix}")
    return source / name


def _recorded_choice(run_dir: Path) -> str:
    config = run_dir / "config.yaml"
    if not config.is_file():
        return "best"
    return load_config(config).eval.checkpoint


@dataclass
class TrainedRun:
    """A trained model with what it needs to be used.

    Attributes:
        model: the Morse model, in eval mode.
        config: the run's config.
        class_names: K names, background first.
        preprocessing: how a raw scan becomes the network's input
            (:func:`morse.data.intensity.raw_to_network`); None for checkpoints written
            before MORSE recorded it.
        path: the checkpoint file.
        step: the training step it was saved at.
        calibration: the render budget measured for these weights (``morse calibrate``,
            :class:`morse.model.calibration.Calibration`'s record); None when not calibrated.
    """

    model: Morse
    config: Config
    class_names: list[str]
    preprocessing: dict | None
    path: Path
    step: int = 0
    calibration: dict | None = None

    @property
    def geometry(self) -> dict | None:
        """The orientation and spacing the network was trained at (None: grids as stored)."""
        return (self.preprocessing or {}).get("geometry")

    def budget(self) -> dict | None:
        """The render budget the model's renderer is set to now, named and with its values
        (:func:`morse.model.budget.describe_budget`); None without a renderer."""
        if self.model.renderer is None:
            return None
        return describe_budget(self.model.renderer.config, self.config.model.render_margin,
                               self.calibration)


def load_run(
    source: str | Path,
    device: str | torch.device = "cpu",
    which: str | None = None,
    *,
    tta: bool | None = None,
    budget: Budget | None = None,
) -> TrainedRun:
    """Rebuild the model of a checkpoint (safe loading) from its config, classes and channels.

    ``which`` picks a run folder's checkpoint (see :func:`resolve_checkpoint`); ``tta``
    replaces the config's ``eval.tta`` (None keeps the run's); ``budget`` sets the renderer's
    budget (:mod:`morse.model.budget`; None: the checkpoint's calibrated budget where it has
    one, else the run's default).
    """
    path = resolve_checkpoint(source, which)
    state = load_checkpoint(path)
    validate_checkpoint(state, path, ["model", "config", "class_names"])
    if "in_channels" not in state:
        raise CheckpointError(
            f"checkpoint {path} does not say how many image channels the model takes (written "
            "before MORSE saved in_channels); retrain it with this version"
        )
    cfg = config_from_dict(state["config"], origin=str(path))
    if tta is not None:
        cfg = replace(cfg, eval=replace(cfg.eval, tta=tta))
    class_names = list(state["class_names"])
    model = build_model(_without_pretrained(cfg), int(state["in_channels"]), len(class_names))
    model.load_state_dict(state["model"])
    broken = [name for name, value in model.state_dict().items()
              if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise CheckpointError(
            f"{path}: {len(broken)} weight tensor(s) hold NaN or infinity (first: {broken[0]}); "
            "the run diverged before it was saved: use an earlier checkpoint or retrain"
        )
    calibration = _calibration(state, path)
    if model.renderer is not None:
        model.renderer.config = budget_config(model.renderer.config, budget, calibration)
    return TrainedRun(model.to(device).eval(), cfg, class_names, state.get("preprocessing"),
                      path, int(state.get("step", 0)), calibration)


def _calibration(state: dict, path: Path) -> dict | None:
    """The checkpoint's calibration record, checked; None when it has none."""
    record = state.get("calibration")
    if record is None:
        return None
    margin = record.get("render_margin") if isinstance(record, dict) else None
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin > 0:
        raise CheckpointError(f"{path}: its calibration holds no render_margin > 0 (found "
                              f"{margin!r}); calibrate the run again with morse calibrate RUN")
    return record


def _without_pretrained(cfg: Config) -> Config:
    """The config without a pretrained-weights file: the checkpoint holds every weight, and
    the file may be gone (another machine, a moved folder)."""
    options = {k: v for k, v in cfg.model.backbone_options.items() if k != "pretrained"}
    return replace(cfg, model=replace(cfg.model, backbone_options=options))


def predict_case(
    model: Morse, cfg: Config, volume: Volume, device, geometry: dict | None = None, **outputs
) -> VolumePrediction:
    """``predict_volume`` with the settings of a run's config (``eval.tta`` included), on the
    volume's own grid; ``outputs`` are ``predict_volume``'s ``probabilities`` and ``gate``.

    With a ``geometry`` (the run's record, :mod:`morse.data.geometry`), the network runs on
    the volume reoriented and resampled to what it was trained on, and the renderer writes
    directly on the volume's own voxels; the coarse map is the backbone's logits read at
    those voxels. No label map is resampled.
    """
    settings = InferenceConfig.from_config(cfg, device)
    if geometry is None:
        return predict_volume(model, volume.image, settings, **outputs)
    axes = network_axes(volume.affine, geometry, volume.source)
    network = to_network(replace(volume, label=None), geometry)
    prediction = predict_volume(model, network.image, settings,
                                output_shape=axes.shape(volume.spatial_shape), **outputs)
    return VolumePrediction(**{
        name: None if maps is None else axes.inverse(maps, leading=int(name == "probabilities"))
        for name, maps in vars(prediction).items()
    })
