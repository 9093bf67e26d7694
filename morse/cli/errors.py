"""One line for an operating-system error, as the command line prints it."""

from __future__ import annotations

import errno

__all__ = ["os_error_line"]

_FIXES = {
    errno.ENOSPC: "free some space or write elsewhere (-o)",
    errno.EACCES: "check the folder's permissions or write elsewhere (-o)",
    errno.EROFS: "the file system is read-only; write elsewhere (-o)",
    errno.ENOTDIR: "a file stands where a folder is needed; choose another path",
}


def os_error_line(error: OSError) -> str:
    """The file, what went wrong and, for the usual causes, what to do.

    >>> os_error_line(OSError(errno.ENOSPC, "No space left on device", "runs/a/last.pt"))
    'runs/a/last.pt: No space left on device; free some space or write elsewhere (-o)'
    """
    if error.filename is None or isinstance(error, FileExistsError):
        return str(error)
    where = error.filename if error.filename2 is None else f"{error.filename} -> {error.filename2}"
    fix = _FIXES.get(error.errno)
    return f"{where}: {error.strerror or error}" + (f"; {fix}" if fix else "")
