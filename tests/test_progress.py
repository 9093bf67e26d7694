"""Progress on a terminal (a bar) and elsewhere (one line per interval), and its log file."""

from __future__ import annotations

import io

from morse.io.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_without_a_terminal_and_the_same_lines_in_the_log_file(tmp_path):
    out, log = io.StringIO(), tmp_path / "folder" / "train.log"
    progress = Progress(2, stream=out, log_file=log)
    for step in (1, 2):
        progress.update()
        progress.report(f"step {step}/2", postfix="short")
    progress.write("only in the file", screen=False)
    progress.close()
    assert out.getvalue() == "step 1/2\nstep 2/2\n"
    assert log.read_text() == "step 1/2\nstep 2/2\nonly in the file\n"


def test_log_file_is_appended_not_replaced(tmp_path):
    log = tmp_path / "train.log"
    for text in ("first", "second"):
        progress = Progress(1, stream=io.StringIO(), log_file=log)
        progress.write(text)
        progress.close()
    assert log.read_text() == "first\nsecond\n"


def test_terminal_gets_a_bar_and_the_log_file_plain_lines(tmp_path):
    out, log = _Terminal(), tmp_path / "train.log"
    progress = Progress(2, stream=out, log_file=log)
    progress.update()
    progress.report("step 1/2 loss 0.5", postfix="loss 0.5")
    progress.close()
    assert "\r" in out.getvalue() and "loss 0.5" in out.getvalue()
    assert log.read_text() == "step 1/2 loss 0.5\n"


def test_disabled_progress_shows_no_interval_but_still_warnings():
    out = io.StringIO()
    progress = Progress(1, stream=out, enabled=False)
    progress.report("[1/1] case: 0.1 s")
    progress.write("warning: something")
    progress.close()
    assert out.getvalue() == "warning: something\n"
