"""Test modules share code through ``helpers`` and ``conftest``, never by importing each other.

Importing one test module from another runs its tests' module-level code twice under two
names, hides fixtures behind ``noqa`` imports and ties unrelated files together; the parser
below catches every form, inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def _is_test_module(name: str) -> bool:
    parts = name.lstrip(".").split(".")
    return parts[0].startswith("test_") or (
        parts[0] == "tests" and len(parts) > 1 and parts[1].startswith("test_"))


def imported_test_modules(source: str) -> list[str]:
    """Test modules (``test_*``, ``tests.test_*``, relative ones) that ``source`` imports, one
    name per import statement, in the order ``ast.walk`` meets them."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            prefix = "." * node.level
            if node.module:
                module = prefix + node.module
                candidates = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            else:
                candidates = [prefix + alias.name for alias in node.names]
        else:
            continue
        names.extend([name for name in candidates if _is_test_module(name)][:1])
    return names


def test_the_checker_sees_every_form_of_importing_a_test_module():
    source = "\n".join([
        "import test_cli", "from test_cli import TINY", "from tests.test_cli import TINY",
        "from . import test_cli", "from tests import test_cli",
        "def f():", "    from test_data_formats import ramp",
        "from helpers import TINY", "import testing", "from tests import helpers",
    ])
    assert imported_test_modules(source) == [
        "test_cli", "test_cli", "tests.test_cli", ".test_cli", "tests.test_cli",
        "test_data_formats",
    ]


def test_no_test_module_imports_another():
    modules = sorted(TESTS.glob("test_*.py"))
    assert len(modules) > 10, f"no test modules found under {TESTS}"
    offenders = {
        path.name: found
        for path in modules
        if (found := imported_test_modules(path.read_text(encoding="utf-8")))
    }
    assert not offenders, (
        f"test modules import other test modules (move what they share to tests/helpers.py or "
        f"a fixture in tests/conftest.py): {offenders}"
    )
