"""Run nnU-Net's own commands with MORSE's trainers found: ``morse nnunet train|predict ARGS``.

``nnUNetv2_train ... -tr nnUNetTrainerMORSE`` finds the trainer through ``nnUNet_extTrainer``
(:func:`trainer_dir`), but only after searching nnU-Net's own trainers, which imports all of
them: its Primus trainers import timm and torchvision, and a torchvision that does not match the
installed torch (pip's CUDA torchvision next to a CPU torch) fails to import, so every trainer
name but ``nnUNetTrainer`` crashes. :func:`run_entry` runs nnU-Net's command in this process
with MORSE's trainers resolved by name and nnU-Net's trainer modules that cannot import skipped
(named on stderr), so only trainers that really need torchvision are lost.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import types
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from morse.errors import ConfigError

__all__ = [
    "SUPPORTED", "check_nnunet", "install_line", "install_shim", "run_entry", "shim_path",
    "trainer_dir", "uninstall_shim", "with_trainer_dir",
]

SUPPORTED = ((2, 8), (2, 9))
"""nnunetv2 versions tested: from 2.8 (``nnUNet_extTrainer``) up to, not including, 2.9."""
ENTRY_POINTS = {"train": "nnUNetv2_train", "predict": "nnUNetv2_predict"}


def trainer_dir() -> Path:
    """The folder to put in ``nnUNet_extTrainer``: it holds one module, MORSE's trainers."""
    return Path(__file__).resolve().parent / "ext"


def with_trainer_dir(environ: dict[str, str] | os._Environ) -> str:
    """``nnUNet_extTrainer`` with :func:`trainer_dir` first and the user's folders kept.

    >>> with_trainer_dir({"nnUNet_extTrainer": "/mine"}).endswith(os.pathsep + "/mine")
    True
    """
    here = str(trainer_dir())
    others = [p for p in environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p and p != here]
    return os.pathsep.join([here, *others])


def install_line() -> str:
    """The pip command that adds nnU-Net and keeps the installed torch (a plain install would
    replace a CPU torch with PyPI's newest CUDA build)."""
    try:
        torch = metadata.version("torch").split("+")[0]
    except metadata.PackageNotFoundError:
        return 'pip install "morse-seg[nnunet]"'
    return f'pip install "morse-seg[nnunet]" "torch=={torch}"'


def check_nnunet() -> str:
    """nnunetv2's version; ``ConfigError`` (one line, with the install command) when it is
    missing or older than 2.8; a note on stderr when it is newer than the versions tested."""
    try:
        version = metadata.version("nnunetv2")
    except metadata.PackageNotFoundError:
        raise ConfigError(f"nnU-Net v2 is not installed; install it next to your torch with: "
                          f"{install_line()}") from None
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts < SUPPORTED[0]:
        raise ConfigError(f"nnunetv2 {version} is too old: MORSE's trainers need nnunetv2>=2.8 "
                          f"(nnUNet_extTrainer); upgrade with: {install_line()}")
    if parts >= SUPPORTED[1]:
        print(f"morse nnunet: nnunetv2 {version} is newer than the versions tested (2.8.x)",
              file=sys.stderr)
    return version


def run_entry(command: str, args: Sequence[str]) -> int:
    """Run ``nnUNetv2_<command>`` (train or predict) with ``args`` unchanged, in this process,
    with ``nnUNet_extTrainer`` set and the trainer lookup made safe (see the module's doc)."""
    check_nnunet()
    name = ENTRY_POINTS[command]
    os.environ["nnUNet_extTrainer"] = with_trainer_dir(os.environ)
    _install_trainer_lookup()
    (entry,) = metadata.entry_points(group="console_scripts", name=name)
    argv = sys.argv
    sys.argv = [name, *args]
    try:
        result = entry.load()()
    finally:
        sys.argv = argv
    return result if isinstance(result, int) else 0


def _install_trainer_lookup() -> None:
    """Point nnU-Net's trainer lookup (where train and predict imported it) at
    :func:`_find_trainer`."""
    from nnunetv2.inference import predict_from_raw_data
    from nnunetv2.run import run_training
    from nnunetv2.utilities import find_objects

    original = find_objects.recursive_find_trainer_class_by_name
    if getattr(original, "morse_lookup", False):
        return
    lookup = _lookup(original)
    for module in (find_objects, run_training, predict_from_raw_data):
        if hasattr(module, "recursive_find_trainer_class_by_name"):
            module.recursive_find_trainer_class_by_name = lookup


def _lookup(original: Callable[[str], type]) -> Callable[[str], type]:
    def find_trainer(trainer_name: str) -> type:
        from morse.nnunet import trainer

        if trainer_name in trainer.__all__:
            return getattr(trainer, trainer_name)
        _skip_unimportable_trainers()
        return original(trainer_name)

    find_trainer.morse_lookup = True  # type: ignore[attr-defined]
    return find_trainer


def _skip_unimportable_trainers() -> list[str]:
    """Import each of nnU-Net's trainer modules; one that fails is replaced by an empty module,
    so nnU-Net's search passes over it. Returns (and prints) the modules skipped."""
    import nnunetv2.training.nnUNetTrainer as tree

    skipped = []
    for info in pkgutil.walk_packages(tree.__path__, tree.__name__ + ".", onerror=lambda _: None):
        if info.name in sys.modules:
            continue
        try:
            importlib.import_module(info.name)
        except Exception as error:  # a broken optional dependency: its trainers are unusable
            sys.modules[info.name] = types.ModuleType(info.name, f"not importable: {error}")
            skipped.append(info.name)
            print(f"morse nnunet: skipping {info.name} ({type(error).__name__}: "
                  f"{str(error).splitlines()[0] if str(error) else ''}); its trainers are "
                  "unavailable with this torch/torchvision", file=sys.stderr)
    return skipped


SHIM_NAME = "nnUNetTrainerMORSE.py"
_SHIM = '''"""MORSE's trainers where nnU-Net looks first (written by `morse nnunet install`)."""

from morse.nnunet.trainer import *  # noqa: F401,F403
'''


def shim_path() -> Path:
    """The module in nnU-Net's own trainer folder, searched before its subpackages (whose
    Primus trainers need an importable torchvision)."""
    import nnunetv2

    return Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer" / SHIM_NAME


def install_shim() -> Path:
    """Write :data:`_SHIM` into nnU-Net's trainer folder (nnU-Net's classic place for custom
    trainers); a file of that name that is not ours is never replaced."""
    path = shim_path()
    if path.exists() and path.read_text() != _SHIM:
        raise ConfigError(f"{path}: exists and was not written by morse; move it away first")
    from morse.io import atomic_write_text

    atomic_write_text(path, _SHIM)
    return path


def uninstall_shim() -> Path | None:
    """Remove the module :func:`install_shim` wrote; None when there is none."""
    path = shim_path()
    if not path.exists():
        return None
    if path.read_text() != _SHIM:
        raise ConfigError(f"{path}: was not written by morse; left in place")
    path.unlink()
    return path
