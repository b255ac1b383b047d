"""Publish: upload an SKU's results to the output location, ``manifest.json`` last.

A reader that finds ``<catalogue>/<sku>/manifest.json`` can rely on every file it lists being in place.
A failed SKU gets ``error.json`` instead, so sellers see why in the same place they look for results.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from product_studio.manifest import REVIEW_PAGE, Manifest, now
from product_studio.records import SkuOutcome
from product_studio.review import render_review_page
from product_studio.storage import Store, guess_content_type

MANIFEST = "manifest.json"
ERROR = "error.json"
CATALOGUE_REPORT = "catalogue-report.json"


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=False, default=str).encode()


def publish_sku(output: Store, manifest: Manifest, files: dict[str, Path]) -> str:
    """Upload ``files`` (key under the SKU -> local path) and the review page, then the manifest, last.

    Returns the manifest's URL. The published manifest lists every file's sha256 and the publishing time.
    """
    prefix = f"{manifest.catalogue_id}/{manifest.sku}"
    checksums = {}
    for rel, path in sorted(files.items()):
        data = path.read_bytes()
        checksums[rel] = hashlib.sha256(data).hexdigest()
        output.write(f"{prefix}/{rel}", data, guess_content_type(path))
    page = render_review_page(manifest).encode()
    checksums[REVIEW_PAGE] = hashlib.sha256(page).hexdigest()
    output.write(f"{prefix}/{REVIEW_PAGE}", page, guess_content_type(REVIEW_PAGE))
    final = manifest.model_copy(update={"files": checksums, "published": now()})
    output.write(f"{prefix}/{MANIFEST}", final.to_json(), "application/json")
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


def has_catalogue_report(output: Store, catalogue_id: str) -> bool:
    """Whether a run of the catalogue has finished (its report exists)."""
    return output.exists(f"{catalogue_id}/{CATALOGUE_REPORT}")
