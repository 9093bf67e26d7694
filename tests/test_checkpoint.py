"""Atomic saving, weights-only loading with clear errors, layout helpers, best/last files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from morse.errors import CheckpointError
from morse.io import checkpoint as ckpt
from morse.io.checkpoint import (
    keep_best,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
    validate_checkpoint,
)
from morse.training.rng import capture_rng_state


class _RunsCode:
    """Unpickling this would run a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _full_checkpoint() -> dict:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    return make_checkpoint(
        model=model.state_dict(), optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(), step=1, epoch=0, rng=capture_rng_state(),
        sampler={"epoch": 0, "seed": 3, "generator": torch.Generator().get_state()},
        config={"model": {"experts": 4, "dropout": 0.1}, "classes": ["bg", "liver"],
                "amp": None, "flags": (True, False)},
        best_metric=0.5, class_names=["background", "liver"],
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_full_layout_round_trips_with_weights_only(tmp_path) -> None:
    state = _full_checkpoint()
    path = save_checkpoint(tmp_path / "run" / "last.pt", state)
    loaded = load_checkpoint(path)
    validate_checkpoint(loaded, path)
    assert loaded["format"] == "morse-checkpoint" and loaded["version"] == 1
    assert torch.equal(loaded["model"]["weight"], state["model"]["weight"])
    assert loaded["optimizer"]["state"][0]["step"] == state["optimizer"]["state"][0]["step"]
    assert loaded["config"] == state["config"]
    assert loaded["class_names"] == ["background", "liver"]
    assert _leftovers(path.parent) == []


def test_crash_mid_write_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    path = save_checkpoint(tmp_path / "last.pt", {"step": 1, "w": torch.ones(3)})
    good_bytes = path.read_bytes()
    real_save = torch.save

    def crashing_save(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)  # bytes reach the temp file ...
        handle.truncate(handle.tell() // 2)  # ... half of them survive the "crash"
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(1000)})
    assert path.read_bytes() == good_bytes
    assert load_checkpoint(path)["step"] == 1
    assert _leftovers(tmp_path) == []


def test_interrupt_during_replace_leaves_no_temp(tmp_path, monkeypatch) -> None:
    def interrupted_replace(*args) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last.pt", {"step": 1})
    assert list(tmp_path.iterdir()) == []


def test_missing_file_names_path_and_fix(tmp_path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="does not exist") as info:
        load_checkpoint(missing)
    assert str(missing) in str(info.value) and "last.pt" in str(info.value)
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("content", [b"", b"plain text, not a checkpoint\n", "truncated"])
def test_unreadable_files_get_one_clear_line(tmp_path, content) -> None:
    path = tmp_path / "bad.pt"
    if content == "truncated":
        save_checkpoint(path, {"w": torch.randn(256)})
        content = path.read_bytes()[:-300]
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "is not a readable PyTorch checkpoint" in message
    assert str(path) in message and "\n" not in message


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_code_running_pickle_is_refused_and_not_executed(tmp_path, writer) -> None:
    marker = tmp_path / "pwned"
    payload = {"model": {}, "evil": _RunsCode(marker)}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"refused: {path} holds Python objects that could run code")
    assert "MORSE loads only tensors and plain containers" in message
    assert "system" in message  # names the culprit
    assert not marker.exists()


def test_arbitrary_objects_are_refused(tmp_path) -> None:
    path = tmp_path / "obj.pt"
    torch.save({"model": {}, "optimizer_class": torch.optim.SGD}, path)
    with pytest.raises(CheckpointError, match="^refused: "):
        load_checkpoint(path)


def test_non_dict_checkpoint_is_rejected(tmp_path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.ones(2), path)
    with pytest.raises(CheckpointError, match="not a dict"):
        load_checkpoint(path)


def test_validation_names_the_missing_keys(tmp_path) -> None:
    state = make_checkpoint(model={}, step=3)
    validate_checkpoint(state, tmp_path / "last.pt", ["model", "step"])
    with pytest.raises(CheckpointError, match=r"missing \['optimizer', 'rng'\]"):
        validate_checkpoint(state, tmp_path / "last.pt", ["model", "optimizer", "step", "rng"])


def test_validation_rejects_foreign_and_future_files(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="format"):
        validate_checkpoint({"model": {}}, tmp_path / "x.pt")
    future = {**make_checkpoint(model={}), "version": 99}
    with pytest.raises(CheckpointError, match="upgrade MORSE"):
        validate_checkpoint(future, tmp_path / "x.pt")


@pytest.mark.parametrize(
    ("parts", "error", "pattern"),
    [
        ({"model": {}, "config": {"root": Path("/data")}}, TypeError, r"config\['root'\]"),
        ({"model": {}, "config": {"w": torch.ones(1)}}, TypeError, "config"),
        ({"model": {}, "config": {1.5: "x"}}, TypeError, "key"),
        ({"model": {}, "sampler": {"g": object()}}, TypeError, "sampler"),
        ({"model": {}, "step": 1.0}, TypeError, "step"),
        ({"model": {}, "class_names": "liver"}, TypeError, "class_names"),
        ({"model": {}, "confg": {}}, ValueError, "confg"),
        ({"config": {}}, ValueError, "model"),
    ],
)
def test_make_checkpoint_rejects_what_would_not_load(parts, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        make_checkpoint(**parts)


def test_keep_best_writes_only_on_improvement(tmp_path) -> None:
    state = make_checkpoint(model={"w": torch.ones(2)}, step=1)
    assert keep_best(tmp_path, 0.6, state)
    assert not keep_best(tmp_path, 0.5, {**state, "step": 2})
    assert not keep_best(tmp_path, float("nan"), {**state, "step": 3})
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 1
    assert keep_best(tmp_path, 0.7, {**state, "step": 4})
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["step"] == 4 and best["best_metric"] == pytest.approx(0.7)
    assert "best_metric" not in state  # caller's dict untouched
    assert _leftovers(tmp_path) == []


def test_keep_best_minimises_a_loss(tmp_path) -> None:
    state = make_checkpoint(model={}, step=1)
    assert keep_best(tmp_path, 1.0, state, mode="min")
    assert not keep_best(tmp_path, 1.5, state, mode="min")
    assert keep_best(tmp_path, 0.2, state, mode="min")
