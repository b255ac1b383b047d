"""Publish: upload an SKU's run to the output location, ``manifest.json`` last.

Order of a publish: the run's files under ``<sku>/runs/<run>/`` (its review page among them), then the
manifest -- the switch: from here on readers see the new run -- then ``<sku>/review/index.html`` (the same
page, for sellers who look there), then the files of earlier runs are removed. Interrupted anywhere, a reader
finds either the old manifest with the old run's files or the new one with the new run's: never a mix.

A failed SKU gets ``error.json`` instead, so sellers see why in the same place they look for results. A
starting run removes an earlier run's ``error.json``, so the file always describes the latest failure.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from product_studio.contact_sheet import contact_sheet, to_jpeg
from product_studio.decisions import Decisions, card_name
from product_studio.manifest import CONTACT_SHEET, REVIEW_PAGE, RUNS, Manifest, now
from product_studio.records import SkuOutcome
from product_studio.review import SkuRow, render_catalogue_index, render_review_page
from product_studio.storage import ObjectNotFound, Store, guess_content_type

MANIFEST = "manifest.json"
ERROR = "error.json"
CATALOGUE_REPORT = "catalogue-report.json"
OUTCOME = "outcome.json"


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=False, default=str).encode()


def publish_sku(output: Store, manifest: Manifest, files: dict[str, Path]) -> str:
    """Publish one run (``files``: key relative to the SKU -> local path); return the manifest's URL."""
    prefix = f"{manifest.catalogue_id}/{manifest.sku}"
    run_page = f"{manifest.run_prefix}/{REVIEW_PAGE}"
    stray = sorted(k for k in files if not k.startswith(manifest.run_prefix + "/"))
    if stray:
        raise ValueError(f"files {stray} are outside the run's prefix {manifest.run_prefix}/")
    checksums = {}
    for rel, path in sorted(files.items()):
        data = path.read_bytes()
        checksums[rel] = hashlib.sha256(data).hexdigest()
        output.write(f"{prefix}/{rel}", data, guess_content_type(path))
    sheet = _contact_sheet(manifest, files)
    if sheet is not None:
        key = f"{manifest.run_prefix}/{CONTACT_SHEET}"
        checksums[key] = hashlib.sha256(sheet).hexdigest()
        output.write(f"{prefix}/{key}", sheet, "image/jpeg")
    page = render_review_page(manifest, at=run_page).encode()
    checksums[run_page] = hashlib.sha256(page).hexdigest()
    output.write(f"{prefix}/{run_page}", page, guess_content_type(REVIEW_PAGE))
    final = manifest.model_copy(update={"files": checksums, "published": now()})
    output.write(f"{prefix}/{MANIFEST}", final.to_json(), "application/json")  # the switch
    publish_sku_page(output, final)
    if sheet is not None:  # at a key that outlives runs, for the catalogue index
        output.write(f"{prefix}/{CONTACT_SHEET}", sheet, "image/jpeg")
    output.delete(f"{prefix}/{ERROR}")  # a failure report from an earlier run no longer holds
    remove_other_runs(output, manifest)
    return output.url(f"{prefix}/{MANIFEST}")


def _contact_sheet(manifest: Manifest, files: dict[str, Path]) -> bytes | None:
    """A JPEG of the run's proposed cards side by side, for the catalogue index (None: no cards)."""
    proposed = [c for c in manifest.cards if c.status == "published" and c.file in files]
    if not proposed:
        return None
    sheet = contact_sheet([files[c.file] for c in proposed], labels=[card_name(c.file) for c in proposed])
    return to_jpeg(sheet)


def publish_sku_page(output: Store, manifest: Manifest, decisions: Decisions | None = None) -> None:
    """``<sku>/review/index.html``: the live run's page, with the seller's decisions when given."""
    page = render_review_page(manifest, at=REVIEW_PAGE, decisions=decisions).encode()
    output.write(f"{manifest.catalogue_id}/{manifest.sku}/{REVIEW_PAGE}", page, "text/html; charset=utf-8")


# Where an SKU's files lived before runs had their own prefix; removed like an earlier run's files.
_LEGACY_FOLDERS = ("cards/", "cutouts/", "lora/", "training/")


def sku_links(output: Store, catalogue_id: str, sku: str) -> dict[str, str]:
    """The URLs of an SKU's live manifest and review page (for outcomes and reports)."""
    return {
        "manifest": output.url(f"{catalogue_id}/{sku}/{MANIFEST}"),
        "review_page": output.url(f"{catalogue_id}/{sku}/{REVIEW_PAGE}"),
    }


def remove_other_runs(output: Store, manifest: Manifest) -> list[str]:
    """Delete the files of the SKU's earlier runs (dropped cards included); return their keys.

    Only while this run's manifest is the live one, and only runs that started before it (run ids sort by
    start time): a later run of the same SKU that already switched the manifest keeps its files.
    """
    prefix = f"{manifest.catalogue_id}/{manifest.sku}/"
    live = json.loads(output.read(f"{prefix}{MANIFEST}")).get("run")
    if live != manifest.run:
        return []
    stale = [
        key
        for key in output.list(prefix)
        if (rel := key[len(prefix) :]).startswith(_LEGACY_FOLDERS)
        or (rel.startswith(f"{RUNS}/") and rel.split("/")[1] < manifest.run)
    ]
    for key in stale:
        output.delete(key)
    return stale


def begin_run(output: Store, catalogue_id: str, sku: str) -> None:
    """A run of the SKU starts: an earlier run's ``error.json`` no longer describes the SKU."""
    output.delete(f"{catalogue_id}/{sku}/{ERROR}")


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
        "skipped": sum(o.status == "skipped" for o in outcomes),
        "failed": sum(o.status == "failed" for o in outcomes),
        "skus": [o.model_dump(mode="json") for o in outcomes],
    }
    output.write(key, _json(report), "application/json")
    return output.url(key)


def write_outcome(output: Store, outcome: SkuOutcome) -> None:
    """``<sku>/outcome.json``: how the SKU's latest run ended (read by the catalogue run that started it)."""
    key = f"{outcome.catalogue_id}/{outcome.sku}/{OUTCOME}"
    output.write(key, outcome.model_dump_json(indent=2).encode(), "application/json")


def read_outcome(output: Store, catalogue_id: str, sku: str) -> SkuOutcome | None:
    """The SKU's latest outcome, or None when no run has finished (or the file does not validate)."""
    try:
        return SkuOutcome.model_validate_json(output.read(f"{catalogue_id}/{sku}/{OUTCOME}", 1_000_000))
    except (ObjectNotFound, ValueError):
        return None


def catalogue_table(outcomes: list[SkuOutcome]) -> str:
    """A markdown table of a catalogue run: SKU, status, worker, duration, review page (or the reason)."""
    rows = ["| SKU | status | worker | seconds | review / reason |", "|---|---|---|---|---|"]
    for o in outcomes:
        detail = f"[review]({o.review_page})" if o.review_page else ""
        if o.status != "published" and o.reason:
            detail = (detail + " " if detail else "") + o.reason.replace("|", "/").replace("\n", " ")[:200]
        seconds = f"{o.seconds:.1f}" if o.seconds is not None else ""
        rows.append(f"| {o.sku} | {o.status} | {o.worker or ''} | {seconds} | {detail} |")
    return "\n".join(rows)


def has_catalogue_report(output: Store, catalogue_id: str) -> bool:
    """Whether a run of the catalogue has finished (its report exists)."""
    return output.exists(f"{catalogue_id}/{CATALOGUE_REPORT}")


def publish_catalogue_index(output: Store, catalogue_id: str) -> str:
    """``<catalogue>/review/index.html``: every SKU of the catalogue's last report as a row (status, decision
    counts, contact sheet or thumbnails, link to its page)."""
    key = f"{catalogue_id}/{REVIEW_PAGE}"
    page = render_catalogue_index(catalogue_id, catalogue_rows(output, catalogue_id))
    output.write(key, page.encode(), "text/html; charset=utf-8")
    return output.url(key)


def catalogue_rows(output: Store, catalogue_id: str) -> list[SkuRow]:
    """The rows of the catalogue's review index, one per SKU of its last report."""
    from product_studio.approvals import read_decisions
    from product_studio.decisions import DecisionsError
    from product_studio.reuse import read_published

    report = json.loads(output.read(f"{catalogue_id}/{CATALOGUE_REPORT}"))
    rows = []
    for entry in report["skus"]:
        sku, status = entry["sku"], entry["status"]
        manifest = read_published(output, catalogue_id, sku)
        if manifest is None:
            rows.append(SkuRow(sku=sku, status=status, error=entry.get("reason") or entry.get("error")))
            continue
        sheet = f"{manifest.run_prefix}/{CONTACT_SHEET}"
        try:
            decisions = read_decisions(output, manifest)
        except DecisionsError:
            decisions = None  # its error is in review/decisions-error.json; every card shows as pending
        row = SkuRow.from_manifest(
            manifest, decisions, contact_sheet=f"{sku}/{CONTACT_SHEET}" if sheet in manifest.files else None
        )
        error = entry.get("reason") if status == "failed" else None
        rows.append(row.model_copy(update={"status": status, "error": error}))
    return rows
