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


CONTRACTS = LIBRARY.parent / "docs" / "contracts.md"


def _contract_keys() -> set[str]:
    """Every key in the Input and Output contract blocks of docs/contracts.md (``a/b.json, c.json``: two
    keys in a/)."""
    text = CONTRACTS.read_text(encoding="utf-8")
    keys = set()
    for heading in ("## Input contract", "## Output contract"):
        block = text.split(heading, 1)[1].split("```", 2)[1]
        for line in block.splitlines():
            if line.startswith("s3://"):
                first, *more = (k.strip() for k in line.split("#", 1)[0].split(","))
                keys.add(first)
                keys |= {f"{first.rsplit('/', 1)[0]}/{k}" for k in more}
    return keys


def test_the_keys_layout_builds_are_the_documented_ones():
    from product_studio import layout as k
    from product_studio.training.export import LORA_FILE

    cat, sku, run = "<catalogue_id>", "<sku>", "<run>"

    def out(key: str) -> str:
        return f"s3://<output>/{key}"

    def in_sku(name: str) -> str:
        return out(k.sku_key(cat, sku, name))

    def in_run(*parts: str) -> str:
        return in_sku(k.run_key(run, *parts))

    built = {
        in_sku(k.MANIFEST),
        in_run(k.CARDS, "<format>[--<template>[--<candidate>]].jpg"),
        in_run(k.CANDIDATES, "*.jpg"),
        in_run(k.CUTOUTS, "*.png"),
        in_run(k.LORA, LORA_FILE),
        in_run(k.TRAINING, "loss.png"),
        in_run(k.TRAINING, k.TRAINING_SUMMARY),
        in_run(k.TRAINING, k.VALIDATION, "*.png"),
        in_run(k.ORIGINALS, "*.jpg"),
        in_run(k.REVIEW_PAGE),
        in_run(k.CONTACT_SHEET),
        *(in_sku(name) for name in (k.REVIEW_PAGE, k.CONTACT_SHEET, k.DECISIONS, k.DECISIONS_ERROR)),
        in_sku(k.card_decision("<card>")),
        out(k.shared_key(k.sku_prefix(cat, sku), "<token>")),
        *(in_sku(name) for name in (k.ERROR, k.OUTCOME, k.SKU_LEASE, k.LIVE_NOW, k.PAGE_STATUS)),
        in_run(k.SUPERSEDED),
        out(k.catalogue_key(cat, k.CATALOGUE_REPORT)),
        out(k.catalogue_key(cat, k.CATALOGUE_LEASE)),
        out(k.catalogue_key(cat, k.REVIEW_PAGE)),
        out(k.shared_key(cat, "<token>")),
        *(out(k.prior_file("<key>", name)) for name in ("*.png", k.PRIOR_SPEC, k.LEASE)),
        out(k.checkpoints_prefix(cat, sku) + "/<run key>/"),
        out(k.scan_marker(cat, "<fingerprint>")),
        out(k.approval_marker(cat, sku, "<marker>")),
        "s3://<marketplace>/" + k.sku_key(cat, sku, k.live_card("<format>", "<n>", ".<ext>")),
        "s3://<marketplace>/" + k.sku_key(cat, sku, k.LISTING),
        "s3://<incoming>/" + k.catalogue_key(cat, k.READY_MARKER),
        "s3://<incoming>/" + k.sku_key(cat, sku, k.PRODUCT),
        "s3://<incoming>/" + k.photos_prefix(cat, sku) + "*.jpg|.png|.webp",
    }
    documented = _contract_keys()
    assert not built - documented, (
        f"built by layout.py, not in docs/contracts.md: {sorted(built - documented)}"
    )
    assert not documented - built, (
        f"in docs/contracts.md, not built by layout.py: {sorted(documented - built)}"
    )
    # The prefixes that list and clear bookkeeping hold the keys written under them.
    assert k.scan_marker(cat, "f").startswith(k.scans_prefix(cat)) and k.scans_prefix(cat).startswith(
        k.scans_prefix()
    )
    assert k.approval_marker(cat, sku, "m").startswith(k.approvals_prefix(cat, sku))
    assert k.approvals_prefix(cat, sku).startswith(k.approvals_prefix(cat)) and k.approvals_prefix().endswith(
        "/"
    )
    assert k.prior_file("p", k.LEASE).startswith(k.prior_prefix("p"))
    assert k.run_of(k.run_key(run, k.CARDS, "x.jpg")) == run and k.run_of(k.MANIFEST) is None
    assert k.card_of_decision(k.card_decision("a--b.jpg")) == "a--b.jpg"
    assert k.card_of_decision(k.DECISIONS) is None and k.card_of_decision("review/decisions/x.txt") is None
