"""The marketplace side of an SKU: ``listing.json`` and the live card files it names, kept in agreement.

Shoppers see the marketplace location, so it must never name a file that is not there, nor hold bytes other
than the ones its listing states, not even for a moment, whatever kills a publisher:

- :func:`checked_listing` -- the listing as it truly is: entries whose file is missing or holds other bytes (a
  writer killed by an older version, a hand edit) are dropped, so they are copied again.
- :func:`apply_listing` -- moves the marketplace from one listing to the next in an order where every
  listing written names only files that hold its bytes: new files first, then a listing without the slots
  about to be overwritten, then those slots, then the new listing, then removals. A file a listing names is
  never overwritten while it names it, so a live card's only copy survives a kill at any point.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from product_studio.layout import LISTING, sku_key, sku_prefix
from product_studio.manifest import now
from product_studio.storage import ObjectNotFound, Store, guess_content_type


class LiveCard(BaseModel):
    """One card live in the marketplace location."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(description="key under the SKU's marketplace prefix: <format>/<n>.<ext>")
    sha256: str
    format: str
    width: int
    height: int
    source: str = Field(description="the card's key in the output location")
    card: str = Field(description="the card's name in decisions.json")
    since: str = Field("", description="when these pixels went live (ISO time; empty: before it was kept)")


class Listing(BaseModel):
    """``<marketplace>/<catalogue>/<sku>/listing.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    catalogue_id: str
    sku: str
    cards: list[LiveCard] = Field(default_factory=list)
    manifest: str = Field("", description="the output key of the manifest the cards were proposed in")
    run: str = Field("", description="the run of that manifest the live cards were last checked against")
    updated: str = ""


def read_listing(marketplace: Store, catalogue_id: str, sku: str) -> Listing:
    """The SKU's listing as written (empty when there is none)."""
    try:
        return Listing.model_validate_json(marketplace.read(sku_key(catalogue_id, sku, LISTING)))
    except ObjectNotFound:
        return Listing(catalogue_id=catalogue_id, sku=sku)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checked_listing(marketplace: Store, listing: Listing) -> tuple[Listing, dict[str, bytes]]:
    """``listing`` without the entries whose file is missing or holds other bytes, and the bytes of the
    entries that hold, by card name (a card moved to another number is copied from them)."""
    prefix = sku_prefix(listing.catalogue_id, listing.sku) + "/"
    kept, blobs = [], {}
    for card in listing.cards:
        try:
            data = marketplace.read(prefix + card.file)
        except ObjectNotFound:
            continue
        if _sha(data) == card.sha256:
            kept.append(card)
            blobs[card.card] = data
    return listing.model_copy(update={"cards": kept}), blobs


def _write_listing(marketplace: Store, listing: Listing) -> None:
    key = sku_key(listing.catalogue_id, listing.sku, LISTING)
    body = listing.model_copy(update={"updated": now()}).model_dump_json(indent=2).encode()
    marketplace.write(key, body, "application/json")


def apply_listing(
    marketplace: Store,
    before: Listing,
    after: Listing,
    blobs: dict[str, bytes],
    *,
    rewrite: bool = False,
    renew: Callable[[], None] = lambda: None,
) -> tuple[list[str], list[str]]:
    """Make the marketplace hold ``after`` (from ``before``, a :func:`checked_listing`): the cards copied
    (by name) and the keys removed -- every file under the SKU's prefix that ``after`` does not name, a
    killed publisher's leftovers included. ``blobs`` holds every card to copy, by name; ``rewrite`` writes the
    listing even when its cards are unchanged (another run's, or a listing that named missing files);
    ``renew`` is called before every write (the publisher's lease)."""
    marketplace = _Renewing(marketplace, renew)
    prefix = sku_prefix(after.catalogue_id, after.sku) + "/"
    for card in after.cards:
        if _sha(blobs.get(card.card, b"")) != card.sha256 and card not in before.cards:
            raise ValueError(f"{card.card}: no bytes with sha256 {card.sha256} to put live")
    named = {c.file: c.sha256 for c in before.cards}
    writes = [c for c in after.cards if named.get(c.file) != c.sha256]
    free = [c for c in writes if c.file not in named]
    taken = {c.file for c in writes if c.file in named}
    for card in free:
        marketplace.write(prefix + card.file, blobs[card.card], guess_content_type(card.file))
    if taken:  # first a listing that no longer names the files about to be overwritten
        interim = [c for c in before.cards if c.file not in taken] + free
        _write_listing(marketplace, after.model_copy(update={"cards": interim}))
        for card in (c for c in writes if c.file in taken):
            marketplace.write(prefix + card.file, blobs[card.card], guess_content_type(card.file))
    if writes or rewrite or after.cards != before.cards:
        _write_listing(marketplace, after)
    keep = {prefix + c.file for c in after.cards} | {prefix + LISTING}
    removed = [k for k in marketplace.list(prefix) if k not in keep]
    for key in removed:
        marketplace.delete(key)
    return [c.card for c in writes], removed


class _Renewing:
    """A store whose writes and deletes first call ``renew`` (the publisher's lease stays its own)."""

    def __init__(self, store: Store, renew: Callable[[], None]) -> None:
        self.store, self.renew = store, renew

    def write(self, key: str, data: bytes, content_type: str) -> None:
        self.renew()
        self.store.write(key, data, content_type)

    def delete(self, key: str) -> None:
        self.renew()
        self.store.delete(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)
