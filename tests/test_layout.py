"""The package's structure as checked rules: the import-linter layer contract (pyproject.toml),
no import cycles, and no function longer than a screen."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

MAX_FUNCTION_LINES = 60


def test_layer_contract_and_acyclic_imports_hold():
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, (
        "import-linter is a dev dependency: make install puts lint-imports in .venv"
    )
    result = subprocess.run(
        [lint_imports], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_function_in_the_package_is_longer_than_a_screen():
    long = []
    for path in sorted((ROOT / "rnnlab").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
