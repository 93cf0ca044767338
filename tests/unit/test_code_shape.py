"""The shape rules of the code base, checked: short modules, short functions (or a stated reason)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "imagerec"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_MARK = "# long:"  # a function may be longer when a comment inside it says why


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_module_over_the_line_limit():
    too_long = {str(p.relative_to(SRC)): n for p in _modules() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def test_no_function_over_the_line_limit_without_a_reason():
    offenders = []
    for path in _modules():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = lines[node.lineno - 1:node.end_lineno]
                if len(body) > MAX_FUNCTION_LINES and not any(LONG_MARK in line for line in body):
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({len(body)} lines)")
    assert not offenders, "functions over the limit with no '# long: why' comment: " + ", ".join(offenders)


def test_the_checks_see_every_subpackage():
    packages = {p.parent.relative_to(SRC).parts[0] for p in _modules() if p.parent != SRC}
    assert {"data", "store", "embed", "indexing", "ann", "search", "train", "eval", "tools"} <= packages
