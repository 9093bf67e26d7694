"""Progress of a long loop, readable on a terminal and in a file.

On a terminal a tqdm bar moves in place. Anywhere else (``morse train > log``, a batch job's
output file) a bar writes a carriage-return refresh several times a second, which makes a
log unreadable; :class:`Progress` writes one plain line per reported interval there instead.
Every line also goes to an optional log file, appended, so a run folder keeps the same
record (``train.log``) whichever way the command was started.

>>> import io
>>> out = io.StringIO()
>>> progress = Progress(3, unit="case", stream=out)
>>> progress.update(); progress.report("[1/3] a: 0.10 s", postfix="a: 0.10 s")
>>> progress.write("done"); progress.close()
>>> out.getvalue()
'[1/3] a: 0.10 s\\ndone\\n'
"""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path
from typing import TextIO

__all__ = ["Progress", "format_eta"]


def format_eta(seconds: float) -> str:
    """``H:MM:SS`` of a duration (``?`` when it is not finite).

    >>> format_eta(3725.4), format_eta(float("inf"))
    ('1:02:05', '?')
    """
    if not seconds < float("inf") or seconds != seconds:
        return "?"
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


class Progress:
    """A bar on a terminal, one line per :meth:`report` elsewhere; a log file either way.

    Args:
        total: the number of units (steps, cases).
        start: units already done (a resumed run).
        unit: what one unit is called on the bar.
        enabled: False shows nothing (lines still go to ``log_file``).
        stream: where the bar or the lines go (default stderr).
        log_file: a file every reported and written line is appended to (created with its
            folder); None: none.
    """

    def __init__(
        self,
        total: int,
        *,
        start: int = 0,
        unit: str = "it",
        enabled: bool = True,
        stream: TextIO | None = None,
        log_file: str | os.PathLike | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.bar = None
        if enabled and _is_terminal(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, unit=unit, file=self.stream,
                            dynamic_ncols=True)
        self.log = None
        if log_file is not None:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            # appended line by line: a resumed run continues the same file, and a killed one
            # leaves every line written before the kill
            self.log = open(log_file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def update(self, count: int = 1) -> None:
        """Advance the bar (a no-op without one)."""
        if self.bar is not None:
            self.bar.update(count)

    def report(self, line: str, postfix: str | None = None) -> None:
        """One interval's line: the bar's postfix on a terminal (``postfix``, default the
        line), the line itself elsewhere; always to the log file."""
        if self.bar is not None:
            self.bar.set_postfix_str(line if postfix is None else postfix)
        elif self.enabled:
            print(line, file=self.stream, flush=True)
        self._log(line)

    def write(self, line: str, screen: bool = True) -> None:
        """A message between intervals (validation, a warning): printed above the bar on a
        terminal, as a line elsewhere, even when the progress itself is not shown (not at
        all with ``screen=False``); always to the log file."""
        if not screen:
            pass
        elif self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)
        self._log(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def _log(self, line: str) -> None:
        if self.log is not None:
            self.log.write(line + "\n")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-like stream without a terminal
        return False
