"""Benchmarks and one-off experiments, run from the repository root: ``python -m benchmarks``.

They are not part of the installed package; they use it. Their figures are in
``docs/explanation/performance.md`` and ``docs/explanation/results.md``, each with its command.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: child processes start there so that ``import benchmarks`` works."""
