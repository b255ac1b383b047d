"""Publishing approved cards: the output location proposes; the marketplace location shows what was approved.

For one SKU, :func:`publish_approved_sku` reads the live manifest and the seller's decisions
(``review/decisions.json`` and ``review/decisions/<card>.json``, see :mod:`product_studio.review.decisions`)
and makes ``<marketplace>/<catalogue>/<sku>/`` hold exactly the approved cards:

- an approved card (its decision's sha256 equal to the card's now) is copied, byte for byte, to
  ``<format>/<n>.<ext>`` (``n`` from 1 per format: the main image first, then in the manifest's order);
- a rejected card, or one sent for another try, is not live (removed if it was);
- a card with no decision yet, or a decision about earlier pixels (stale), keeps whatever was live for that
  card name before: a re-run never takes an approved image down, and never puts an unseen one up;
- a card that does not meet its format's rules, or whose file no longer says how it was made (its IPTC label
  stripped, or made before cards were labelled), is refused: not copied, and the seller's page and the run's
  result say why;
- every card of a run made by a model licensed for non-commercial use only (``Manifest.noncommercial``) is
  refused the same way, approved or not, naming the model and its licence;
- ``listing.json`` names the live cards (file, sha256, format, size, source key in the output location);
  ``listing.apply_listing`` writes files and listings in an order that never names a missing file or other
  bytes, and a run first drops from the listing whatever a killed run left wrong, then repairs it.

One publisher works on an SKU at a time, under the SKU's lease (the one its runs hold).

Re-running with nothing changed writes nothing. A ``decisions.json`` that does not validate changes nothing
live; a per-card object that does not validate decides nothing (its card keeps what was live); either error
goes to ``review/decisions-error.json`` beside them.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections import defaultdict
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

from product_studio import leases
from product_studio.layout import (
    DECISIONS,
    DECISIONS_DIR,
    DECISIONS_ERROR,
    MANIFEST,
    approval_marker,
    approvals_prefix,
    catalogue_key,
    live_card,
    sku_key,
)
from product_studio.manifest import Manifest, now, read_published
from product_studio.marketplace.listing import Listing, LiveCard, apply_listing, checked_listing, read_listing
from product_studio.provenance.labels import label_problem, read_label
from product_studio.publish import publish_sku_page
from product_studio.records import CardRecord, LiveNow, LiveSince
from product_studio.review.decisions import (
    Decisions,
    DecisionsError,
    card_name,
    current_decisions,
    error_record,
    load_decisions,
    unknown_cards,
)
from product_studio.review.status import write_live_now
from product_studio.storage import ObjectNotFound, Store


class SkuApproval(BaseModel):
    """What a publish-approved run did for one SKU."""

    catalogue_id: str
    sku: str
    status: Literal["updated", "unchanged", "error", "no-manifest", "busy"]
    live: list[str] = Field(default_factory=list, description="live card names")
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list, description="marketplace keys removed")
    retry: list[str] = Field(default_factory=list, description="cards the seller sent for another try")
    refused: dict[str, str] = Field(
        default_factory=dict, description="approved cards not put live, and why (their label is missing)"
    )
    error: str | None = None
    retry_error: str | None = Field(None, description="why the cards sent back could not be made again")


class ApprovalError(RuntimeError):
    """An approved card's bytes are not the ones the seller approved."""


def _ordered(manifest: Manifest) -> list:
    """Proposed cards, the main image (a cutout card) first, then in the manifest's order."""
    proposed = [c for c in manifest.cards if c.status == "published" and c.file]
    return sorted(proposed, key=lambda c: c.kind != "cutout")


def live_cards(
    manifest: Manifest, decisions: Decisions | None, before: Listing, refused: frozenset[str] = frozenset()
) -> list[LiveCard]:
    """The cards that should be live now (see the module's rules), numbered per format; never one named in
    ``refused``."""
    holding = current_decisions(decisions, manifest) if decisions else {}
    earlier = {c.card: c for c in before.cards}
    chosen: list[tuple[str, str, int, int, str, str]] = []  # (card, format, w, h, source, sha256)
    went_live = now()
    for card in _ordered(manifest):
        name = card_name(card.file)
        if name in refused:
            continue
        decision = holding.get(name)
        if decision is not None and decision.decision == "retry" and card.kind != "scene":
            decision = None  # the seller's own photo cannot be made again: as if undecided
        if decision is not None:
            if decision.decision == "approve":
                source = sku_key(manifest.catalogue_id, manifest.sku, card.file)
                chosen.append((name, card.format, card.width, card.height, source, decision.sha256))
        elif name in earlier:  # undecided, or decided on earlier pixels: what was live stays
            old = earlier[name]
            chosen.append((name, old.format, old.width, old.height, old.source, old.sha256))
    numbers: dict[str, int] = defaultdict(int)
    live = []
    for name, fmt, width, height, source, sha in chosen:
        numbers[fmt] += 1
        ext = posixpath.splitext(source)[1]
        old = earlier.get(name)
        since = old.since if old is not None and old.sha256 == sha else went_live
        live.append(
            LiveCard(
                file=live_card(fmt, numbers[fmt], ext),
                sha256=sha,
                format=fmt,
                width=width,
                height=height,
                source=source,
                card=name,
                since=since,
            )
        )
    return live


# A publisher's lease on an SKU: short, and renewed before every marketplace write, so a publisher killed
# mid-write (kill -9: no release) holds it at most this long; the next publisher waits longer than that, takes
# it over and repairs what the kill left (a card file no listing names). An SKU run's lease (hours, while it
# trains) still makes publishers wait, then report ``busy``.
PUBLISH_LEASE_SECONDS = 60
PUBLISH_WAIT_SECONDS = 90.0


def publish_approved_sku(
    output: Store,
    marketplace: Store,
    catalogue_id: str,
    sku: str,
    *,
    owner: str = "publish-approved",
    lease_seconds: int = PUBLISH_LEASE_SECONDS,
    wait: float = PUBLISH_WAIT_SECONDS,
) -> SkuApproval:
    """Make the SKU's marketplace prefix hold exactly its approved cards (see the module's rules), under the
    SKU's lease (``owner``): one publisher at a time, and never while a run of the SKU replaces its cards.
    ``busy`` when another holds the lease for longer than ``wait`` seconds (the next run tries again)."""
    lease = leases.sku_lease(output, catalogue_id, sku, owner, lease_seconds, wait)
    if not isinstance(lease, leases.Lease):
        held = leases.held_by(lease)
        return SkuApproval(catalogue_id=catalogue_id, sku=sku, status="busy", error=held)
    try:
        return _publish_approved(output, marketplace, catalogue_id, sku, lease.renew_if_due)
    finally:
        lease.release()


def _read_decisions(output: Store, manifest: Manifest) -> Decisions | None:
    """The seller's decisions (both shapes); an unusable ``decisions.json`` raises DecisionsError, recorded
    for the seller beside it; per-card objects that decide nothing and decisions about cards no longer
    proposed are recorded too (the others still count)."""
    error_key = sku_key(manifest.catalogue_id, manifest.sku, DECISIONS_ERROR)
    try:
        decisions, problems = load_decisions(output, manifest)
    except DecisionsError as exc:
        output.write(error_key, error_record(str(exc), now()), "application/json")
        raise
    warnings = list(problems)  # per-card objects that decide nothing
    where = output.url(sku_key(manifest.catalogue_id, manifest.sku, DECISIONS_DIR))
    if decisions and (unknown := unknown_cards(decisions, manifest, where)):
        warnings.append(unknown)
    if warnings:  # the other decisions still count
        output.write(error_key, error_record("; ".join(warnings), now()), "application/json")
    else:  # a fixed file: the old error no longer holds
        output.delete(error_key)
    return decisions


def _publish_approved(
    output: Store, marketplace: Store, catalogue_id: str, sku: str, renew: Callable[[], None]
) -> SkuApproval:
    result = {"catalogue_id": catalogue_id, "sku": sku}
    manifest = read_published(output, catalogue_id, sku)
    if manifest is None:
        return SkuApproval(**result, status="no-manifest")
    try:
        decisions = _read_decisions(output, manifest)
    except DecisionsError as exc:
        return SkuApproval(**result, status="error", error=str(exc))
    holding = current_decisions(decisions, manifest) if decisions else {}
    scenes = {card_name(c.file) for c in manifest.cards if c.file and c.kind == "scene"}
    retry = sorted(
        n for n, d in holding.items() if d.decision == "retry" and n in scenes
    )  # main: as undecided

    written = read_listing(marketplace, catalogue_id, sku)
    before, blobs = checked_listing(marketplace, written)
    live, refused = _going_live(manifest, decisions, before, output, blobs)
    manifest_key = sku_key(catalogue_id, sku, MANIFEST)
    listing = Listing(catalogue_id=catalogue_id, sku=sku, cards=live, manifest=manifest_key, run=manifest.run)
    rewrite = written.cards != before.cards or bool(live and listing.run != written.run)
    added, removed = apply_listing(marketplace, before, listing, blobs, rewrite=rewrite, renew=renew)
    now_live = {c.card: LiveSince(sha256=c.sha256, since=c.since) for c in live}
    write_live_now(output, catalogue_id, sku, LiveNow(cards=now_live, refused=refused, updated=now()))
    publish_sku_page(output, manifest, decisions)  # the decisions in force, what is live, refused cards
    changed = rewrite or listing.cards != before.cards
    status = "updated" if changed or added or removed else "unchanged"
    names = [c.card for c in live]
    return SkuApproval(
        **result, status=status, live=names, added=added, removed=removed, retry=retry, refused=refused
    )


def _why_not_live(data: bytes, card: CardRecord | None) -> str | None:
    """Why an approved card's file may not go live (None: it may): it breaks its format's rules, or its
    label is missing."""
    if card is None:  # live before, from an earlier run: it must still carry some label
        return None if read_label(data) else "its file carries no IPTC digital source type"
    if not card.compliance.passed:
        problems = "; ".join(card.compliance.problems) or "see its compliance checks"
        return f"it does not meet {card.format}'s rules ({problems})"
    problem = label_problem(data, card.render.mode)
    if problem and card.provenance is None:
        return (
            "it was made before cards were labelled: make the SKU again (product-studio sku CAT SKU --force)"
        )
    return problem


def _going_live(
    manifest: Manifest, decisions: Decisions | None, before: Listing, output: Store, blobs: dict[str, bytes]
) -> tuple[list[LiveCard], dict[str, str]]:
    """The cards to be live and the approved cards refused (and why); ``blobs`` (the live copies by card
    name, from :func:`checked_listing`) gains the bytes of every card to copy.

    Every card is read before anything is written: a renumbered card's live copy may be the very file
    another card replaces. A refused card frees its number, so the rest are numbered again.
    """
    records = {sku_key(manifest.catalogue_id, manifest.sku, c.file): c for c in manifest.cards if c.file}
    barred = _not_for_sale(manifest)
    refused: dict[str, str] = {}
    while True:
        live = live_cards(manifest, decisions, before, frozenset(refused))
        # This run's cards, new or live before: a licence that forbids commercial use bars every one.
        newly = {c.card: barred for c in live if barred and c.source in records}
        for card in (c for c in live if c not in before.cards and c.card not in newly):
            data = blobs.get(card.card, b"")
            if _sha(data) != card.sha256:
                try:
                    data = blobs[card.card] = output.read(card.source)
                except ObjectNotFound:
                    newly[card.card] = f"its file {card.source} is gone; decide on the current card again"
                    continue
            if _sha(data) != card.sha256:
                raise ApprovalError(
                    f"{output.url(card.source)} is not the card approved (sha256 {card.sha256}); "
                    "run publish-approved again once the SKU's run has finished"
                )
            if why := _why_not_live(data, records.get(card.source)):  # None: live before, from an earlier run
                newly[card.card] = why
        if not newly:
            return live, refused
        refused |= newly


def _not_for_sale(manifest: Manifest) -> str | None:
    """Why none of the run's cards may go to the marketplace: a model that made them is licensed for
    non-commercial use only (PRODUCT_STUDIO_ALLOW_NONCOMMERCIAL_MODELS let the run make them); or None."""
    if why := manifest.noncommercial:
        return f"{why}: cards made with it are for non-commercial use only and never go to the marketplace"
    return None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _marker(versions: dict[str, str], catalogue_id: str, sku: str) -> str:
    """A digest of what publish-approved reads for an SKU: its decisions (both shapes) and its manifest."""
    per_card = sku_key(catalogue_id, sku, DECISIONS_DIR) + "/"
    parts = [
        versions.get(sku_key(catalogue_id, sku, DECISIONS), ""),
        versions.get(sku_key(catalogue_id, sku, MANIFEST), ""),
        *sorted(f"{k}={v}" for k, v in versions.items() if k.startswith(per_card)),
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def due_skus(output: Store, catalogue_id: str | None = None) -> dict[tuple[str, str], str]:
    """SKUs whose decisions or manifest changed since publish-approved last ran: (catalogue, sku) -> marker.

    From listings only (the output location, or one catalogue of it, and the markers); nothing is read.
    """
    versions = output.versions(catalogue_key(catalogue_id, "") if catalogue_id else "")
    done = {tuple(k.split("/")[1:4]) for k in output.list(approvals_prefix(catalogue_id))}
    due = {}
    for key in versions:
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == MANIFEST and not parts[0].startswith("_"):
            cat, sku = parts[0], parts[1]
            marker = _marker(versions, cat, sku)
            if (cat, sku, marker) not in done:
                due[(cat, sku)] = marker
    return due


def mark_done(output: Store, catalogue_id: str, sku: str, marker: str) -> None:
    """Record that the SKU's decisions and manifest as of ``marker`` are handled."""
    for key in output.list(approvals_prefix(catalogue_id, sku)):
        output.delete(key)
    output.write(approval_marker(catalogue_id, sku, marker), b"", "text/plain")
