"""The import graph: every module has a layer, no import goes up a layer, and nothing imports in a circle.

Every import counts, wherever it is: at the top, inside a function, under ``if TYPE_CHECKING:``, or through
``importlib.import_module``. A reader beside the file it reads breaks most circles; a value two stages share
belongs in the lower one (or in the foundations).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The library's folders and its top-level modules, lowest first: each may import from its own layer or any
# layer below it. A folder (``product_studio/<name>/``) counts as one unit, whatever its modules import among
# themselves; its ``__init__`` docstring says what it owns and what it may import.
LAYERS: list[tuple[str, set[str]]] = [
    # No stage knowledge: keys, records, seller text made safe to show, storage and its leases, images,
    # identifiers, what differs per model family.
    (
        "foundations",
        {"", "layout", "records", "text", "images", "storage", "leases", "identifiers", "families/"},
    ),
    ("models", {"models"}),
    ("ingest", {"ingest"}),
    ("cleaning", {"cutout_checks", "cleaning", "photos/"}),  # photos/: matting and photo-set advice
    ("training", {"training/"}),  # class images (priors) and training from folders included
    ("rendering", {"rendering/"}),
    # How a card file says how it was made (IPTC label, C2PA): below the rules that check it.
    ("provenance", {"provenance/"}),
    ("cards", {"cards/"}),
    ("eval", {"evaluation"}),
    # Every model a run uses, loaded once per worker process (the preflight, then the stages).
    ("loaded models", {"loaded_models"}),
    # Every stage's configuration, validated once: above the stages it configures, below those run with it.
    ("settings", {"settings"}),
    ("manifest", {"manifest"}),
    ("reruns", {"reruns/"}),
    ("review", {"review/"}),
    ("publish", {"publish"}),
    ("marketplace", {"marketplace/"}),
    ("dev kit", {"devkit/"}),
    ("flows", {"flows/"}),
]
# The most modules beside the folders at the top of product_studio/ (its __init__ not counted): ~15.
TOP_LEVEL_MODULES = 16


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under ``product_studio/`` and ``flows/`` of ``root``."""
    found = {}
    for top in ("product_studio", "flows"):
        for path in sorted((root / top).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(node: ast.AST, here: str, is_package: bool) -> list[str]:
    """The dotted names an import statement (or ``import_module("x")`` call) may load."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: from the module's own package upwards
            package = here.split(".") if is_package else here.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        return [base] + [f"{base}.{alias.name}" for alias in node.names]
    if (
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", "")) in {"import_module", "__import__"}
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ):
        return [str(node.args[0].value)]
    return []


def import_graph(root: Path) -> dict[str, list[tuple[int, str]]]:
    """Module -> (line, project module) for every import of another project module, at any depth."""
    modules = module_names(root)
    graph: dict[str, list[tuple[int, str]]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = _imported(node, name, path.name == "__init__.py")
            if not names:
                continue
            # ``from a import b``: b if it is a module, else a; ``import a.b``: a.b (or its package).
            targets = {n for n in names[1:] if n in modules} or {names[0]}
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add((node.lineno, target))
        graph[name] = sorted(edges)
    return graph


def unit(module: str, root: Path = ROOT) -> str:
    """The unit a module counts as: ``<folder>/`` for a module in a folder of product_studio (and for every
    module of flows), else its name under product_studio ("" for product_studio itself)."""
    if module == "flows" or module.startswith("flows."):
        return "flows/"
    parts = module.split(".")[1:]
    if not parts:
        return ""
    return parts[0] + "/" if len(parts) > 1 or (root / "product_studio" / parts[0]).is_dir() else parts[0]


def layer_of(module: str, root: Path = ROOT) -> int | None:
    """The index of the module's layer in LAYERS, or None."""
    name = unit(module, root)
    return next((index for index, (_, members) in enumerate(LAYERS) if name in members), None)


def unplaced(graph: dict[str, list[tuple[int, str]]], root: Path = ROOT) -> list[str]:
    return sorted({f"{unit(m, root) or m}: add it to LAYERS" for m in graph if layer_of(m, root) is None})


def upward_imports(graph: dict[str, list[tuple[int, str]]], root: Path = ROOT) -> list[str]:
    """Every import from a lower layer of a module in a higher one, with the file and line."""
    modules = module_names(root)
    bad = []
    for module, edges in graph.items():
        low = layer_of(module, root)
        for line, target in edges:
            high = layer_of(target, root)
            if low is not None and high is not None and high > low:
                where = modules[module].relative_to(root)
                bad.append(
                    f"{where}:{line}: {module} ({LAYERS[low][0]}) imports {target} ({LAYERS[high][0]}), "
                    "a higher layer"
                )
    return sorted(bad)


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def module_circles(graph: dict[str, list[tuple[int, str]]]) -> list[list[str]]:
    return circles({m: {t for _, t in edges} for m, edges in graph.items()})


def folder_circles(graph: dict[str, list[tuple[int, str]]], root: Path = ROOT) -> list[list[str]]:
    """Circles between units (folders and top-level modules)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        for _, target in targets:
            if unit(module, root) != unit(target, root):
                edges[unit(module, root)].add(unit(target, root))
    return circles(edges)


def test_every_module_has_a_layer():
    graph = import_graph(ROOT)
    assert len(graph) > 40
    assert not unplaced(graph), unplaced(graph)


def test_no_import_goes_up_a_layer():
    bad = upward_imports(import_graph(ROOT))
    assert not bad, "\n".join(bad)


def test_no_import_circle_between_modules():
    found = module_circles(import_graph(ROOT))
    assert not found, found


def test_no_import_circle_between_folders():
    found = folder_circles(import_graph(ROOT))
    assert not found, found


def test_the_tree_shows_the_layers():
    """Few modules at the top of product_studio/; every folder says what it owns and what it may import."""
    top = sorted(p.stem for p in (ROOT / "product_studio").glob("*.py") if p.stem != "__init__")
    assert len(top) <= TOP_LEVEL_MODULES, top
    folders = sorted(p.parent for p in (ROOT / "product_studio").glob("*/__init__.py"))
    assert {f"{f.name}/" for f in folders} == {u for _, units in LAYERS for u in units if u.endswith("/")} - {
        "flows/"
    }
    for folder in folders:
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
        assert "May import" in doc and len(doc) > 80, (
            f"{folder.name}/__init__.py: say what it owns and may import"
        )


def test_the_checks_catch_an_upward_import_a_circle_and_an_unplaced_module(tmp_path):
    for folder in ("training", "marketplace", "cards"):
        (tmp_path / "product_studio" / folder).mkdir(parents=True)
    (tmp_path / "flows").mkdir()
    files = {
        "product_studio/__init__.py": "",
        "product_studio/ingest.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from product_studio.training.presets import PRESETS\n"
        ),
        "product_studio/publish.py": "def f():\n    from product_studio.marketplace import approvals\n",
        "product_studio/marketplace/__init__.py": "",
        "product_studio/marketplace/approvals.py": "from product_studio import publish\n",
        "product_studio/training/__init__.py": "",
        "product_studio/training/presets.py": (
            "import importlib\nimportlib.import_module('product_studio.cards.plan')\n"
        ),
        "product_studio/cards/__init__.py": "",
        "product_studio/cards/plan.py": "from product_studio.training import presets\n",
        "product_studio/newcomer.py": "from . import ingest\n",
        "product_studio/cards/a.py": "from . import b\n",
        "product_studio/cards/b.py": "from product_studio.cards import a\n",
        "flows/__init__.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["product_studio.newcomer"] == [(1, "product_studio.ingest")]  # relative imports resolve
    assert unplaced(graph, tmp_path) == ["newcomer: add it to LAYERS"]
    assert upward_imports(graph, tmp_path) == [
        "product_studio/ingest.py:3: product_studio.ingest (ingest) imports product_studio.training.presets "
        "(training), a higher layer",
        "product_studio/publish.py:2: product_studio.publish (publish) imports "
        "product_studio.marketplace.approvals (marketplace), a higher layer",
        "product_studio/training/presets.py:2: product_studio.training.presets (training) imports "
        "product_studio.cards.plan (cards), a higher layer",
    ]
    assert module_circles(graph) == [
        ["product_studio.cards.a", "product_studio.cards.b"],
        ["product_studio.cards.plan", "product_studio.training.presets"],
        ["product_studio.marketplace.approvals", "product_studio.publish"],
    ]
    assert folder_circles(graph, tmp_path) == [["cards/", "training/"], ["marketplace/", "publish"]]


def test_no_function_is_longer_than_a_screen():
    """Issue 33: every function of the library and the flows reads in one screen (60 lines)."""
    long = []
    for top in ("product_studio", "flows"):
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > 60:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, long
