"""One writer per folder: an exclusive lock on a run or output folder, named for its holder.

Two ``morse train -o SAME`` or two ``predict`` into one folder would interleave their files;
the second now stops at once with one line that names the holder. The lock is ``flock`` on
``FOLDER/.morse.lock``: the operating system releases it when the holder exits, however it
exits (kill -9 included), so a stale lock file never blocks the next run.

>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> with FolderLock(folder, "morse train"):
...     FolderLock(folder, "morse predict").acquire()  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
morse.io.lock.FolderBusyError: ... is in use by morse train (pid ...); wait for it ...
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType

from morse.errors import MorseError
from morse.io import remove_temporaries

__all__ = ["FolderBusyError", "FolderLock", "LOCK_NAME"]

LOCK_NAME = ".morse.lock"


class FolderBusyError(MorseError, RuntimeError):
    """Another process holds the folder's lock."""


class FolderLock:
    """Hold ``folder`` for one writer (``with FolderLock(run_dir, "morse train"): ...``).

    Acquiring creates the folder, takes the lock without waiting, records the holder (command,
    pid, host, start time) and removes temporaries that interrupted writes left behind.
    """

    def __init__(self, folder: str | os.PathLike, command: str) -> None:
        self.folder = Path(folder)
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderBusyError(
                f"{self.folder} is in use by {holder}; wait for it to finish or choose another "
                "folder"
            ) from None
        self._fd = fd
        _write_holder(fd, self.command)
        remove_temporaries(self.folder)
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()


def _write_holder(fd: int, command: str) -> None:
    record = {
        "command": command, "pid": os.getpid(), "host": socket.gethostname(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)


def _read_holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        record = {}
    if not record:
        return "another process"
    return (f"{record.get('command', 'another process')} (pid {record.get('pid', '?')} on "
            f"{record.get('host', '?')}, since {record.get('started', '?')})")
