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


@pytest.mark.parametrize("command", [["evaluate", "RUN"],
                                     ["predict", "RUN", "a.nii.gz", "-o", "o"]])
@pytest.mark.parametrize("threads", ["0", "-2", "two"])
def test_threads_flag_refuses_a_count_below_one_before_loading(command, threads, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([*command, "--threads", threads])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --threads: must be an integer >= 1, got '{threads}'" in err
