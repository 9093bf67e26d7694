"""Peak resident memory of this process, for the CPU memory rows of the benchmarks."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mib() -> float:
    """The process' peak resident set size in MiB.

    Reads ``VmHWM`` from ``/proc/self/status`` on Linux: unlike ``ru_maxrss``, it starts afresh
    in a new program, so a child started from a large parent measures only itself.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
