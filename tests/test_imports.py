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

# Lowest first. A module may import from its own layer or any layer below it. Each module is named, except
# in the PACKAGES below (the trainer, the dev kit, the flows): there the package's entry covers its modules.
# Packages that count as one unit: for their layer, and for circles between packages.
PACKAGES = ("product_studio.training", "product_studio.devkit", "flows")

LAYERS: list[tuple[str, set[str]]] = [
    (
        "foundations",  # no stage knowledge: keys, records, storage, images, tokens, model loading, leases
        {
            "product_studio",
            "product_studio.layout",
            "product_studio.records",
            "product_studio.images",
            "product_studio.storage",
            "product_studio.identifiers",
            "product_studio.models",
            "product_studio.leases",
            "product_studio.contact_sheet",
            "product_studio.pages",
        },
    ),
    ("ingest", {"product_studio.ingest"}),
    ("cleaning", {"product_studio.cutout_checks", "product_studio.cleaning"}),
    ("training", {"product_studio.training"}),
    # Which class images a run needs follows the trainer's config (prior preservation on, how many, at what
    # resolution), so priors sit above the trainer; training a folder uses both.
    ("priors", {"product_studio.priors"}),
    ("folder training", {"product_studio.folder_training"}),
    ("rendering", {"product_studio.scenes", "product_studio.lora_slot", "product_studio.rendering"}),
    # How a card file says how it was made (IPTC label, C2PA): below the rules that check it.
    (
        "provenance labels",
        {"product_studio.labels", "product_studio.content_credentials", "product_studio.provenance"},
    ),
    ("card rules and scores", {"product_studio.formats", "product_studio.quality", "product_studio.scoring"}),
    # Every model a run uses, loaded once per worker process (the preflight, then the stages).
    ("loaded models", {"product_studio.loaded_models"}),
    # Every stage's configuration, validated once: above the stages it configures, below those run with it.
    ("settings", {"product_studio.settings"}),
    ("cards", {"product_studio.cards", "product_studio.evaluation"}),
    ("manifest", {"product_studio.manifest"}),
    (
        "re-runs",
        {
            "product_studio.content_key",
            "product_studio.earlier_runs",
            "product_studio.catalogue_changes",
            "product_studio.sku_batches",
        },
    ),
    ("review", {"product_studio.decisions", "product_studio.review", "product_studio.review_links"}),
    (
        "publish",
        {
            "product_studio.publish",
            "product_studio.listing",
            "product_studio.approvals",
            "product_studio.rerender",
            "product_studio.retry_failures",
        },
    ),
    ("dev kit", {"product_studio.devkit"}),
    ("flows", {"flows"}),
]


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


def layer_of(module: str) -> int | None:
    """The index of the module's layer in LAYERS (a package of PACKAGES covers its modules), or None."""
    name = unit(module)
    return next((index for index, (_, members) in enumerate(LAYERS) if name in members), None)


def unplaced(graph: dict[str, list[tuple[int, str]]]) -> list[str]:
    return sorted(f"{m}: add it to LAYERS" for m in graph if layer_of(m) is None)


def upward_imports(graph: dict[str, list[tuple[int, str]]], root: Path) -> list[str]:
    """Every import from a lower layer of a module in a higher one, with the file and line."""
    modules = module_names(root)
    bad = []
    for module, edges in graph.items():
        low = layer_of(module)
        for line, target in edges:
            high = layer_of(target)
            if low is not None and high is not None and high > low:
                where = modules[module].relative_to(root)
                bad.append(
                    f"{where}:{line}: {module} ({LAYERS[low][0]}) imports {target} ({LAYERS[high][0]}), "
                    "a higher layer"
                )
    return sorted(bad)


def unit(module: str) -> str:
    """The package a module counts as for circles between packages (itself when in none of PACKAGES)."""
    return next((p for p in PACKAGES if module == p or module.startswith(p + ".")), module)


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


def package_circles(graph: dict[str, list[tuple[int, str]]]) -> list[list[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        for _, target in targets:
            if unit(module) != unit(target):
                edges[unit(module)].add(unit(target))
    return circles(edges)


def test_every_module_has_a_layer():
    graph = import_graph(ROOT)
    assert len(graph) > 40
    assert not unplaced(graph), unplaced(graph)


def test_no_import_goes_up_a_layer():
    bad = upward_imports(import_graph(ROOT), ROOT)
    assert not bad, "\n".join(bad)


def test_no_import_circle_between_modules():
    found = module_circles(import_graph(ROOT))
    assert not found, found


def test_no_import_circle_between_packages():
    found = package_circles(import_graph(ROOT))
    assert not found, found


def test_the_checks_catch_an_upward_import_a_circle_and_an_unplaced_module(tmp_path):
    (tmp_path / "product_studio" / "training").mkdir(parents=True)
    (tmp_path / "flows").mkdir()
    files = {
        "product_studio/__init__.py": "",
        "product_studio/ingest.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from product_studio.training.presets import PRESETS\n"
        ),
        "product_studio/publish.py": "def f():\n    from product_studio.approvals import read_decisions\n",
        "product_studio/approvals.py": "from product_studio import publish\n",
        "product_studio/training/__init__.py": "",
        "product_studio/training/presets.py": (
            "import importlib\nimportlib.import_module('product_studio.priors')\n"
        ),
        "product_studio/priors.py": "from product_studio.training import presets\n",
        "product_studio/newcomer.py": "from . import ingest\n",
        "flows/__init__.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["product_studio.newcomer"] == [(1, "product_studio.ingest")]  # relative imports resolve
    assert unplaced(graph) == ["product_studio.newcomer: add it to LAYERS"]
    assert upward_imports(graph, tmp_path) == [
        "product_studio/ingest.py:3: product_studio.ingest (ingest) imports product_studio.training.presets "
        "(training), a higher layer",
        "product_studio/training/presets.py:2: product_studio.training.presets (training) imports "
        "product_studio.priors (priors), a higher layer",
    ]
    assert module_circles(graph) == [
        ["product_studio.approvals", "product_studio.publish"],
        ["product_studio.priors", "product_studio.training.presets"],
    ]
    assert package_circles(graph) == [
        ["product_studio.approvals", "product_studio.publish"],
        ["product_studio.priors", "product_studio.training"],
    ]
