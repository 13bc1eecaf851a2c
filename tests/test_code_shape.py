"""The house rules that keep the code readable, checked so they hold: every module of the
product at most 400 lines, every function at most 60 (issue 16 found 515-line modules and a
141-line function; these keep them from coming back)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = sorted(p for folder in ("tasks", "workers", "clients") for p in (ROOT / folder).rglob("*.py"))
MODULE_LINES, FUNCTION_LINES = 400, 60


@pytest.mark.parametrize("path", PRODUCT, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path):
    source = path.read_text()
    assert source.count("\n") <= MODULE_LINES, f"{path.name}: over {MODULE_LINES} lines; split it by concept"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > FUNCTION_LINES]
    assert not long, f"{path.name}: functions over {FUNCTION_LINES} lines: {', '.join(long)}"


def test_the_check_sees_the_product():
    assert len(PRODUCT) > 100 and any(p.name == "cli.py" for p in PRODUCT)
