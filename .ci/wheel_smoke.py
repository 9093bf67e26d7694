"""Smoke test of an installed morse-seg wheel, run by .ci/run outside the source tree.

    python .ci/wheel_smoke.py WHEEL PRESETS_DIR

with the Python of a fresh virtual environment holding only the wheel and its dependencies.
It checks that the package imports from that environment (not from a source checkout), that
``morse --version`` names the wheel's version, that every preset YAML of the source tree is
inside the wheel and loads from the install, and that a two-step ``morse train`` and a ``morse
predict`` run on a generated three-case nnU-Net dataset (in this process, so torch is imported
once). Each failure prints one line and exits 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from pathlib import Path

TINY = [
    "model.backbone_options={width: 0.25}", "model.expert_width=16", "model.head_width=16",
    "model.train_points=64", "model.render_points=64", "model.num_frequencies=8",
    "train.batch_size=2", "train.log_every=1", "data.num_workers=0", "train.iterations=2",
    "train.val_every=2", "train.checkpoint_every=2", "data.split_fractions=[0.34,0.33,0.33]",
]


def fail(message: str) -> None:
    print(f"wheel smoke test: FAILED: {message}")
    sys.exit(1)


def console_script(*args: str) -> str:
    """Run the installed ``morse`` script; its stdout, or fail with its last stderr line."""
    script = Path(sysconfig.get_path("scripts")) / "morse"
    done = subprocess.run([str(script), *args], capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        fail(f"morse {' '.join(args)} exited {done.returncode}: {lines[-1]}")
    return done.stdout


def morse(*args: str) -> None:
    """The command line in this process (one import of torch for all the commands)."""
    from morse.cli.main import main

    code = main(list(args))
    if code != 0:
        fail(f"morse {' '.join(args[:2])} exited {code} (its error is printed above)")


def check_import(source_root: Path) -> str:
    import morse

    where = Path(morse.__file__).resolve()
    if source_root in where.parents:
        fail(f"morse imported from the source tree ({where}), not from the wheel")
    return morse.__version__


def check_presets(wheel: Path, presets: Path) -> list[str]:
    """Every preset of the source tree is in the wheel, and loads from the install."""
    wanted = sorted(p.name for p in presets.glob("*.yaml"))
    packed = sorted(Path(n).name for n in zipfile.ZipFile(wheel).namelist()
                    if n.startswith("morse/configs/") and n.endswith(".yaml"))
    if not wanted or packed != wanted:
        fail(f"presets in the wheel {packed} differ from the source tree's {wanted}")
    from morse.config import load_config

    names = [Path(name).stem for name in wanted]
    for name in names:
        load_config(name)
    return names


def make_dataset(root: Path, cases: int = 3, shape=(32, 32, 4)) -> Path:
    """An nnU-Net v2 folder: a bright disc (label 1) on noise per case, 1 mm voxels."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for index in range(cases):
        cy, cx = rng.uniform(12, 20, 2)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < 36).astype(np.uint8)
        label = np.repeat(disc[..., None], shape[2], axis=2)
        image = (label * 2.0 + rng.normal(0, 0.3, shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / f"c{index}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"c{index}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "disc": 1},
        "numTraining": cases, "file_ending": ".nii.gz",
    }))
    return root


def check_train_predict(folder: Path) -> float:
    """``morse train`` two steps and ``morse predict`` one scan; the seconds both took."""
    start = time.perf_counter()
    data = make_dataset(folder / "Dataset001_Disc")
    run = folder / "run"
    morse("train", "nnunet_2d", f"data.root={data}", *TINY, "-o", str(run))
    scan = data / "imagesTr" / "c0_0000.nii.gz"
    morse("predict", str(run), str(scan), "-o", str(folder / "out"))
    if not (folder / "out" / "c0.nii.gz").is_file():
        fail("morse predict wrote no c0.nii.gz")
    return time.perf_counter() - start


def main() -> None:
    wheel, presets = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    version = check_import(presets.parents[1])
    printed = console_script("--version").strip()
    if printed != f"morse {version}" or version not in wheel.name:
        fail(f"morse --version printed {printed!r}; the wheel is {wheel.name}")
    names = check_presets(wheel, presets)
    with tempfile.TemporaryDirectory() as folder:
        seconds = check_train_predict(Path(folder))
    print(f"wheel smoke test: {wheel.name} ok: {printed}, {len(names)} presets, "
          f"train + predict in {seconds:.0f} s")


if __name__ == "__main__":
    main()
