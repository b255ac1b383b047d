"""The library's boundaries: no Prefect and no flows inside ``product_studio/``, not even lazily."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "product_studio"


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (functions, methods, conditionals) or via importlib."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def test_library_source_never_imports_prefect_or_flows():
    files = sorted(LIBRARY.rglob("*.py"))
    assert len(files) > 20
    bad = [
        f"{path.relative_to(LIBRARY.parent)}:{line} imports {module}"
        for path in files
        for line, module in _imports(path)
        if module.split(".")[0] in {"prefect", "flows"}
    ]
    assert not bad, bad


def test_the_scan_sees_lazy_and_dynamic_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    import prefect.states\n"
        "def g():\n    from flows.sku import sku_flow\n"
        "import importlib\nimportlib.import_module('prefect')\n"
    )
    assert sorted(m for _, m in _imports(module)) == ["flows.sku", "importlib", "prefect", "prefect.states"]


def test_library_imports_without_prefect():
    code = (
        "import pkgutil, importlib, sys, product_studio\n"
        "for m in pkgutil.walk_packages(product_studio.__path__, 'product_studio.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in {'prefect', 'flows'})\n"
        "assert not bad, bad\n"
        "assert 'torch' not in sys.modules, 'importing the library must not import torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_flows_read_like_the_stages():
    sku = (LIBRARY.parent / "flows" / "sku.py").read_text()
    assert len(sku.splitlines()) <= 170  # stages, lease and skip: glue, no rules
    # The output contract is built by the library, never spelt out as a dict in a flow.
    assert '"schema"' not in sku and "manifest = {" not in sku
