"""Every command turns a missing path into one line on stderr and exit code 2."""

from __future__ import annotations

import pytest

from morse.cli.main import main


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["evaluate", "{missing}"], "no such checkpoint or run folder"),
        (["predict", "{missing}", "{missing}/a.nii.gz", "-o", "{tmp}/out"],
         "no such checkpoint or run folder"),
        (["check", "{missing}"], "no such dataset folder"),
        (["score", "{missing}", "{tmp}"], "no such folder"),
        (["train", "--resume", "{missing}"], "nothing to resume"),
        (["report", "{missing}"], "no such run folder"),
        (["train", "{missing}/x.yaml"], "no such config file or preset"),
        (["config", "{missing}/x.yaml"], "no such config file or preset"),
    ],
)
def test_a_missing_path_is_one_line_and_exit_2(tmp_path, capsys, argv, named):
    values = {"missing": str(tmp_path / "nowhere"), "tmp": str(tmp_path)}
    code = main([a.format(**values) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and named in err[0], err
