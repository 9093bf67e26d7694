"""Right and wrong flips of the renderer: masks, counts, colours and the figure from examples."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.flips import (
    FLIP_COLOURS,
    FlipCounts,
    count_flips,
    flip_rgba,
    main,
    make_flip_figure,
)


def _slices() -> dict[str, np.ndarray]:
    """Two 4 x 6 slices: slice 0 has 3 right flips and 1 wrong, slice 1 one other flip."""
    truth = np.zeros((2, 4, 6), np.int64)
    truth[:, 1:3, 1:5] = 1
    coarse, rendered = truth.copy(), truth.copy()
    coarse[0, 1, 1:4] = 0        # coarse misses three cells ...
    rendered[0, 2, 4] = 0        # ... rendering fixes them and loses one
    coarse[1, 0, 0] = 2          # wrong both times: 2 -> 1 where the truth is 0
    rendered[1, 0, 0] = 1
    image = np.random.default_rng(0).normal(size=(2, 4, 6)).astype(np.float32)
    return {"image": image, "truth": truth, "coarse": coarse, "rendered": rendered}


def test_counts_and_colours_separate_right_wrong_and_other_flips():
    s = _slices()
    assert count_flips(s["truth"][0], s["coarse"][0], s["rendered"][0]) == FlipCounts(3, 1, 0)
    assert count_flips(s["truth"], s["coarse"], s["rendered"]) == FlipCounts(3, 1, 1)
    rgba = flip_rgba(s["truth"][0], s["coarse"][0], s["rendered"][0])
    assert tuple(rgba[1, 2]) == FLIP_COLOURS["right"]
    assert tuple(rgba[2, 4]) == FLIP_COLOURS["wrong"]
    assert rgba[0, 0, 3] == 0.0 and (rgba[..., 3] > 0).sum() == 4
    with pytest.raises(ValueError, match="one shape"):
        count_flips(s["truth"][0], s["coarse"], s["rendered"])


def test_figure_titles_carry_each_slices_counts_and_the_total():
    s = _slices()
    figure = make_flip_figure(s["image"], s["truth"], s["coarse"], s["rendered"], ["a", "b"])
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == ["a\n+3 right, -1 wrong, 0 other", "b\n+0 right, -0 wrong, 1 other"]
    assert "+3 right, -1 wrong, 1 other" in figure._suptitle.get_text()


def test_command_line_draws_the_examples_of_an_evaluation(tmp_path, capsys):
    s = _slices()
    np.savez(tmp_path / "examples.npz", **s, case_id=np.array(["c", "c"]), slice=np.array([4, 9]))
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / "flips.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "c slice 4: +3 right, -1 wrong, 0 other" in printed
    assert "c slice 9: +0 right, -0 wrong, 1 other" in printed
    np.savez(tmp_path / "plain.npz", image=s["image"], truth=s["truth"], coarse=s["coarse"])
    with pytest.raises(ValueError, match="no rendered array"):
        main([str(tmp_path / "plain.npz")])


def test_volume_counts_split_every_changed_voxel_by_its_true_class(tmp_path):
    from benchmarks.flips import volume_flips
    from morse.cli.main import main as morse_main

    from helpers import TINY, make_dataset, write_config

    config = write_config(tmp_path / "tiny.yaml", make_dataset(tmp_path / "Dataset001_Disc"), 2)
    run = tmp_path / "run"
    assert morse_main(["train", str(config), *TINY, "model.render_points=256", "-o",
                       str(run)]) == 0
    (counts,) = volume_flips(run, "val").values()
    assert set(counts) <= {"all", "background", "disc"} and "background" in counts
    by_class = [c for name, c in counts.items() if name != "all"]
    assert sum(by_class, FlipCounts(0, 0, 0)) == counts["all"] and counts["all"].changed > 0
