"""The data package's shape: one-way imports inside it, and a public surface that loads lightly."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pixelwise.data

DATA = Path(pixelwise.data.__file__).parent
# Imports inside a function, allowed because the module is heavy and only some data needs it.
HEAVY_OPTIONAL = {"pycocotools"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(DATA.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module imported, whether the import sits inside a function) for every import of a file."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    local = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            # `from . import x` and `from .formats import folder` may name modules themselves.
            names = [f"{target}.{a.name}" for a in node.names]
            out += [(n, id(node) in local) for n in [target, *names]]
        elif isinstance(node, ast.Import):
            out += [(a.name, id(node) in local) for a in node.names]
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in DATA.rglob("*.py")}
    return {
        name: {target for target, _ in _imports(path) if target in modules and target != name}
        for name, path in modules.items()
    }


def test_types_imports_no_other_module_of_the_data_package():
    assert _graph()["pixelwise.data.types"] == set()


def test_the_data_package_has_no_import_cycle():
    graph = _graph()
    # The package's own __init__ names everything (lazily); its edges are not imports of a module.
    graph.pop("pixelwise.data", None)
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(node) :] + [node]))
        if node in done:
            return
        for nxt in graph.get(node, ()):
            visit(nxt, path + [node])
        done.add(node)

    for node in graph:
        visit(node, [])


def test_imports_inside_functions_are_only_for_heavy_optional_modules():
    found = []
    for path in sorted(DATA.rglob("*.py")):
        for target, inside in _imports(path):
            if inside and target.split(".")[0] not in HEAVY_OPTIONAL:
                found.append(f"{path.relative_to(DATA)}: {target}")
    assert found == []


def test_every_public_name_resolves():
    for name in pixelwise.data.__all__:
        assert getattr(pixelwise.data, name) is not None, name
    assert set(pixelwise.data.__all__) <= set(dir(pixelwise.data))


def test_the_encodings_and_the_limits_load_without_torch_or_the_readers():
    code = (
        "import sys\n"
        "import pixelwise.data.encodings\n"
        "from pixelwise.data import DEFAULT_MAX_PIXELS, ENCODINGS\n"
        "heavy = [m for m in ('torch', 'pixelwise.data.open', 'pixelwise.data.formats', 'tqdm') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_opening_a_data_set_loads_no_torch():
    code = "import sys\nfrom pixelwise.data import open_dataset, scan_dataset\nprint('torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
