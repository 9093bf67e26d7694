"""Writing files a user and their colleagues will read: atomically, with the umask's mode.

Every result, report, curve, scan and checkpoint the package writes goes through
:func:`atomic_open` (or :func:`atomic_write_bytes` on top of it): the bytes go to a hidden
temporary file next to the target (``.NAME.XXXX.tmp``), are flushed and fsynced, and replace the
target in one ``os.replace``. Readers never see a half-written file, and a failure leaves the
previous file as it was. Temporaries that a killed process left behind are removed by
:func:`remove_temporaries`, which the holder of a folder's lock (:mod:`morse.io.lock`) calls.

``tempfile.mkstemp`` creates files with mode 0600, which on a shared server hides results from
colleagues; the written file gets the mode that the user's umask gives a new file instead.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write_text(folder / "a.txt", "hello").read_text()
'hello'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "atomic_open", "atomic_write_bytes", "atomic_write_text", "default_file_mode",
    "remove_temporaries",
]

TEMPORARY_SUFFIX = ".tmp"


def default_file_mode() -> int:
    """The permission bits ``open()`` would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary handle whose bytes replace ``path`` only when the block ends without error.

    An existing file keeps its mode; a new one gets the umask's. On any error (Ctrl-C
    included) the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = target.stat().st_mode & 0o777 if target.exists() else default_file_mode()
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=TEMPORARY_SUFFIX, dir=target.parent
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; an existing file keeps its mode."""
    with atomic_open(path) as handle:
        handle.write(data)
    return Path(path)


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the hidden ``.NAME.XXXX.tmp`` files that interrupted writes left in ``folder``.

    Call it only while holding the folder's lock, so that no live writer owns one of them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".*{TEMPORARY_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_directory(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
