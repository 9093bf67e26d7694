"""One writer per folder: a second writer is refused with the holder named, a killed holder
frees the folder, and taking the lock clears temporaries that interrupted writes left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from morse.io import atomic_open
from morse.io.lock import LOCK_NAME, FolderBusyError, FolderLock

HOLD = """
import sys, time
from morse.io.lock import FolderLock
FolderLock(sys.argv[1], "morse train").acquire()
print("held", flush=True)
time.sleep(60)
"""


def _holder(folder):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_second_writer_is_refused_with_the_holder_named(tmp_path):
    process = _holder(tmp_path)
    try:
        with pytest.raises(FolderBusyError, match=rf"in use by morse train \(pid {process.pid}"):
            FolderLock(tmp_path, "morse predict").acquire()
    finally:
        process.kill()
        process.wait()


def test_a_holder_killed_with_sigkill_frees_the_folder(tmp_path):
    process = _holder(tmp_path)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with FolderLock(tmp_path, "morse train"):
        assert (tmp_path / LOCK_NAME).exists()


def test_released_lock_can_be_taken_again_in_the_same_process(tmp_path):
    with FolderLock(tmp_path, "a"):
        pass
    with FolderLock(tmp_path, "b"):
        pass


def test_taking_the_lock_removes_temporaries_of_interrupted_writes(tmp_path):
    stale = tmp_path / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half")
    keep = tmp_path / "last.pt"
    keep.write_bytes(b"whole")
    with FolderLock(tmp_path, "morse train"):
        assert not stale.exists()
        assert keep.read_bytes() == b"whole"


def test_interrupted_atomic_open_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "case.nii.gz"
    target.write_bytes(b"previous good file")
    with pytest.raises(KeyboardInterrupt), atomic_open(target) as handle:
        handle.write(b"partial")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"previous good file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.nii.gz"]
