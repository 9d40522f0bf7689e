"""House rules that keep the code readable: short functions, no import cycles (import-linter runs in make test)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "pixelwise"
MAX_LINES = 60
# A function may be longer when the line above its `def` (or a decorator) says why, e.g.
# `# long: one flat table of flags reads better whole`.
REASON = "# long:"


def long_functions() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            length = node.end_lineno - first + 1
            if length > MAX_LINES and REASON not in lines[first - 2]:
                found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_functions_fit_on_a_screen_or_say_why():
    assert long_functions() == []
