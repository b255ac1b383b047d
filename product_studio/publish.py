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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from product_studio.layout import (
    CATALOGUE_REPORT,
    CONTACT_SHEET,
    ERROR,
    LORA,
    MANIFEST,
    OUTCOME,
    REVIEW_PAGE,
    SUPERSEDED,
    catalogue_key,
    run_key,
    run_of,
    sku_key,
    sku_prefix,
)
from product_studio.manifest import Manifest, now, read_published
from product_studio.records import SkuOutcome
from product_studio.review.contact_sheet import contact_sheet, to_jpeg
from product_studio.review.decisions import Decisions, DecisionsError, card_name, read_decisions
from product_studio.review.links import MAX_SECONDS
from product_studio.review.pages import catalogue_rows, render_catalogue_index, render_review_page
from product_studio.review.status import read_news, write_page_status
from product_studio.storage import ObjectNotFound, Store, guess_content_type


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=False, default=str).encode()


def publish_sku(
    output: Store, manifest: Manifest, files: dict[str, Path], uploaded: dict[str, str] | None = None
) -> str:
    """Publish one run (``files``: key relative to the SKU -> local path); return the manifest's URL.

    ``uploaded`` (key -> sha256: the run's preview manifest's ``files``) names what this run already wrote:
    a file with the same bytes is not written again, so a preview's card stays the object the seller saw.
    """
    cat, sku = manifest.catalogue_id, manifest.sku
    run_page = run_key(manifest.run, REVIEW_PAGE)
    stray = sorted(k for k in files if run_of(k) != manifest.run)
    if stray:
        raise ValueError(f"files {stray} are outside the run's prefix {manifest.run_prefix}/")
    checksums = {}
    for rel, path in sorted(files.items()):
        data = path.read_bytes()
        checksums[rel] = hashlib.sha256(data).hexdigest()
        if (uploaded or {}).get(rel) != checksums[rel]:
            output.write(sku_key(cat, sku, rel), data, guess_content_type(path))
    for rel in sorted(set(uploaded or {}) - set(files)):  # a preview's card the final run no longer names
        output.delete(sku_key(cat, sku, rel))
    sheet = _contact_sheet(manifest, files)
    if sheet is not None:
        key = run_key(manifest.run, CONTACT_SHEET)
        checksums[key] = hashlib.sha256(sheet).hexdigest()
        output.write(sku_key(cat, sku, key), sheet, "image/jpeg")
    page = render_review_page(manifest, at=run_page).encode()
    checksums[run_page] = hashlib.sha256(page).hexdigest()
    output.write(sku_key(cat, sku, run_page), page, guess_content_type(REVIEW_PAGE))
    final = manifest.model_copy(update={"files": checksums, "published": now()})
    before = read_published(output, cat, sku)
    if before is not None and before.run != manifest.run:
        mark_replaced(output, cat, sku, before.run)  # its files stay while links to its page may
    output.write(sku_key(cat, sku, MANIFEST), final.to_json(), "application/json")  # the switch
    publish_sku_page(output, final, decisions_in_force(output, final))  # e.g. approvals a retry keeps
    if sheet is not None:  # at a key that outlives runs, for the catalogue index
        output.write(sku_key(cat, sku, CONTACT_SHEET), sheet, "image/jpeg")
    output.delete(sku_key(cat, sku, ERROR))  # a failure report from an earlier run no longer holds
    remove_other_runs(output, manifest)
    return output.url(sku_key(cat, sku, MANIFEST))


def mark_rest_failed(output: Store, catalogue_id: str, sku: str, run: str, reason: str) -> bool:
    """A run failed after publishing its preview: the preview stays live and its page says the rest failed
    (the manifest's ``failed``). False when the live manifest is not this run's preview."""
    live = read_published(output, catalogue_id, sku)
    if live is None or live.run != run or live.stage != "preview":
        return False
    failed = live.model_copy(update={"failed": reason})
    output.write(sku_key(catalogue_id, sku, MANIFEST), failed.to_json(), "application/json")
    publish_sku_page(output, failed, decisions_in_force(output, failed))
    return True


def _contact_sheet(manifest: Manifest, files: dict[str, Path]) -> bytes | None:
    """A JPEG of the run's proposed cards side by side, for the catalogue index (None: no cards)."""
    proposed = [c for c in manifest.cards if c.status == "published" and c.file in files]
    if not proposed:
        return None
    sheet = contact_sheet([files[c.file] for c in proposed], labels=[card_name(c.file) for c in proposed])
    return to_jpeg(sheet)


def decisions_in_force(output: Store, manifest: Manifest) -> Decisions | None:
    """The seller's decisions for the page; an unusable file shows none (publish-approved reports it)."""
    try:
        return read_decisions(output, manifest)
    except DecisionsError:
        return None


def publish_sku_page(output: Store, manifest: Manifest, decisions: Decisions | None = None) -> None:
    """``<sku>/review/index.html``: the live run's page, with the seller's decisions when given and what
    storage says of its cards (live since when, refused, failed retries: ``review.status``); and
    ``review/status.json``, what pages shared earlier read of it when they are opened."""
    news = read_news(output, manifest)
    page = render_review_page(manifest, at=REVIEW_PAGE, decisions=decisions, news=news).encode()
    key = sku_key(manifest.catalogue_id, manifest.sku, REVIEW_PAGE)
    output.write(key, page, "text/html; charset=utf-8")
    write_page_status(output, manifest, news)


def sku_links(output: Store, catalogue_id: str, sku: str) -> dict[str, str]:
    """The URLs of an SKU's live manifest and review page (for outcomes and reports)."""
    return {
        "manifest": output.url(sku_key(catalogue_id, sku, MANIFEST)),
        "review_page": output.url(sku_key(catalogue_id, sku, REVIEW_PAGE)),
    }


# How long a replaced run's cards, cutouts and photos stay readable: the longest a review link lasts, so no
# page a seller holds shows a broken image.
KEEP_REPLACED_SECONDS = MAX_SECONDS


def mark_replaced(output: Store, catalogue_id: str, sku: str, run: str) -> None:
    """Run ``run`` is no longer live (said just before the switch): ``runs/<run>/superseded.json``."""
    body = _json({"run": run, "replaced": now()})
    output.write(sku_key(catalogue_id, sku, run_key(run, SUPERSEDED)), body, "application/json")


def remove_other_runs(
    output: Store, manifest: Manifest, keep_seconds: float = KEEP_REPLACED_SECONDS
) -> list[str]:
    """Delete the files of the SKU's earlier runs (dropped cards included); return their keys.

    Only while this run's manifest is the live one, and only runs that started before it (run ids sort by
    start time): a later run of the same SKU that already switched the manifest keeps its files. A run that
    was live and was replaced less than ``keep_seconds`` ago keeps what review links show (its LoRA goes at
    once): a link made while it was live keeps working until it expires. A run that never went live (a
    failed publish's files) goes at once.
    """
    prefix = sku_prefix(manifest.catalogue_id, manifest.sku) + "/"
    live = json.loads(output.read(prefix + MANIFEST)).get("run")
    if live != manifest.run:
        return []
    runs: dict[str, list[str]] = {}
    for key in output.list(prefix):
        if (run := run_of(key[len(prefix) :])) is not None and run < manifest.run:
            runs.setdefault(run, []).append(key)
    stale = []
    for run, keys in sorted(runs.items()):
        if _replaced_within(output, prefix + run_key(run, SUPERSEDED), keep_seconds):
            keys = [k for k in keys if k.startswith(prefix + run_key(run, LORA) + "/")]
        stale += keys
    for key in stale:
        output.delete(key)
    return stale


def _replaced_within(output: Store, marker: str, seconds: float) -> bool:
    try:
        replaced = datetime.fromisoformat(json.loads(output.read(marker, max_bytes=10_000))["replaced"])
    except (ObjectNotFound, ValueError, KeyError, TypeError):
        return False
    return (datetime.now(UTC) - replaced).total_seconds() < seconds


def begin_run(output: Store, catalogue_id: str, sku: str) -> None:
    """A run of the SKU starts: an earlier run's ``error.json`` no longer describes the SKU."""
    output.delete(sku_key(catalogue_id, sku, ERROR))


def publish_failure(output: Store, outcome: SkuOutcome) -> str:
    """Write ``error.json``; results of an earlier successful run stay, their manifest still valid."""
    key = sku_key(outcome.catalogue_id, outcome.sku, ERROR)
    output.write(key, _json({**outcome.model_dump(mode="json"), "at": now()}), "application/json")
    return output.url(key)


def publish_catalogue_report(
    output: Store, catalogue_id: str, outcomes: list[SkuOutcome], seconds: float | None = None
) -> str:
    """A per-SKU summary of one catalogue run (``seconds``: its wall time), written after every SKU's own
    outputs."""
    key = catalogue_key(catalogue_id, CATALOGUE_REPORT)
    report = {
        "catalogue_id": catalogue_id,
        "finished": now(),
        "published": sum(o.status == "published" for o in outcomes),
        "skipped": sum(o.status == "skipped" for o in outcomes),
        "failed": sum(o.status == "failed" for o in outcomes),
        **throughput(outcomes, seconds),
        "skus": [o.model_dump(mode="json") for o in outcomes],
    }
    output.write(key, _json(report), "application/json")
    return output.url(key)


def throughput(outcomes: list[SkuOutcome], seconds: float | None) -> dict[str, float | None]:
    """``skus_per_hour`` (SKUs published per hour of the catalogue run's wall time ``seconds``) and
    ``model_load_share`` (of the SKU runs' seconds, the share spent loading models)."""
    published = sum(o.status == "published" for o in outcomes)
    in_runs = sum(o.seconds or 0 for o in outcomes)
    return {
        "seconds": round(seconds, 1) if seconds else None,
        "skus_per_hour": round(3600 * published / seconds, 1) if seconds else None,
        "model_load_share": round(sum(o.model_load_s for o in outcomes) / in_runs, 3) if in_runs else None,
        **training_saved(outcomes),
    }


def training_saved(outcomes: list[SkuOutcome]) -> dict[str, float | int | None]:
    """``trainings_skipped`` (published SKUs that needed no LoRA: TRAIN__WHEN=needed) and the GPU seconds
    that saved, estimated by the mean class-image and training seconds of this run's SKUs that trained
    (None when none trained)."""
    skipped = sum(o.status == "published" and o.training == "not needed" for o in outcomes)
    spent = [o.training_s for o in outcomes if o.training == "trained" and o.training_s]
    mean = sum(spent) / len(spent) if spent else None
    return {
        "trainings_skipped": skipped,
        "training_seconds_saved": round(skipped * mean, 1) if mean is not None and skipped else None,
    }


def write_outcome(output: Store, outcome: SkuOutcome) -> None:
    """``<sku>/outcome.json``: how the SKU's latest run ended (read by the catalogue run that started it)."""
    key = sku_key(outcome.catalogue_id, outcome.sku, OUTCOME)
    output.write(key, outcome.model_dump_json(indent=2).encode(), "application/json")


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
    return output.exists(catalogue_key(catalogue_id, CATALOGUE_REPORT))


def publish_catalogue_index(output: Store, catalogue_id: str) -> str:
    """``<catalogue>/review/index.html``: every SKU of the catalogue's last report as a row (status, decision
    counts, contact sheet or thumbnails, link to its page)."""
    key = catalogue_key(catalogue_id, REVIEW_PAGE)
    page = render_catalogue_index(catalogue_id, catalogue_rows(output, catalogue_id))
    output.write(key, page.encode(), "text/html; charset=utf-8")
    return output.url(key)
