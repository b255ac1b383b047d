"""Publish: upload an SKU's results to the output location, ``manifest.json`` last.

A reader that finds ``<catalogue>/<sku>/manifest.json`` can rely on every file it lists being in place.
A failed SKU gets ``error.json`` instead, so sellers see why in the same place they look for results.
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from product_studio.records import SkuOutcome
from product_studio.storage import Store

MANIFEST = "manifest.json"
ERROR = "error.json"
CATALOGUE_REPORT = "catalogue-report.json"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("product-studio", "torch", "diffusers", "transformers", "peft", "rembg", "pillow"):
        try:
            found[dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=False, default=str).encode()


def publish_sku(
    output: Store, catalogue_id: str, sku: str, files: dict[str, Path], manifest: dict[str, Any]
) -> str:
    """Upload ``files`` (relative key -> local path), then the manifest; return the manifest's URL."""
    prefix = f"{catalogue_id}/{sku}"
    checksums = {}
    for rel, path in sorted(files.items()):
        data = path.read_bytes()
        checksums[rel] = hashlib.sha256(data).hexdigest()
        output.upload_file(f"{prefix}/{rel}", path)
    manifest = {**manifest, "files": checksums, "published": now()}
    output.write(f"{prefix}/{MANIFEST}", _json(manifest), "application/json")
    output.delete(f"{prefix}/{ERROR}")  # a failure report from an earlier run no longer holds
    return output.url(f"{prefix}/{MANIFEST}")


def publish_failure(output: Store, outcome: SkuOutcome) -> str:
    """Write ``error.json``; results of an earlier successful run stay, their manifest still valid."""
    key = f"{outcome.catalogue_id}/{outcome.sku}/{ERROR}"
    output.write(key, _json({**outcome.model_dump(mode="json"), "at": now()}), "application/json")
    return output.url(key)


def publish_catalogue_report(output: Store, catalogue_id: str, outcomes: list[SkuOutcome]) -> str:
    """A per-SKU summary of one catalogue run, written after every SKU's own outputs."""
    key = f"{catalogue_id}/{CATALOGUE_REPORT}"
    report = {
        "catalogue_id": catalogue_id,
        "finished": now(),
        "published": sum(o.status == "published" for o in outcomes),
        "failed": sum(o.status == "failed" for o in outcomes),
        "skus": [o.model_dump(mode="json") for o in outcomes],
    }
    output.write(key, _json(report), "application/json")
    return output.url(key)
