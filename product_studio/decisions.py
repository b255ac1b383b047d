"""Seller decisions: ``<catalogue>/<sku>/review/decisions.json`` in the output location, one per SKU.

A seller (or the marketplace's UI, or ``product-studio review``) writes::

    {"cards": {"amazon-main.png": {"decision": "approve", "sha256": "9f2c...", "note": ""},
               "scene-marble-counter-ebay-square.png": {"decision": "retry", "sha256": "41ab...",
                                                         "note": "the spout looks bent"}},
     "by": "seller@example.com", "at": "2026-11-27T10:00:00+00:00"}

A card is named by its file name (the last part of its key in ``manifest.json``) *and* the sha256 of the
card the seller looked at: a decision about a card that has changed since (a re-run or a retry made new
pixels) is *stale* and decides nothing. The JSON Schema is ``docs/decisions.schema.json``.
"""

from __future__ import annotations

import json
import posixpath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from product_studio.layout import DECISIONS, DECISIONS_MAX_BYTES, sku_key
from product_studio.manifest import Manifest
from product_studio.records import CardRecord
from product_studio.storage import ObjectNotFound, ObjectTooLarge, Store

SCHEMA = "product-studio/decisions/v1"

Verdict = Literal["approve", "reject", "retry"]


class Decision(BaseModel):
    """A seller's word on one card."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: Verdict
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the sha256 of the card decided on")
    note: str = Field("", max_length=2000)


class Decisions(BaseModel):
    """Everything a seller decided about one SKU's cards."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_: str = Field(SCHEMA, alias="schema")
    cards: dict[str, Decision] = Field(default_factory=dict)
    by: str = Field("", max_length=200)
    at: str = ""

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2, by_alias=True).encode()


class DecisionsError(ValueError):
    """A decisions file that cannot be used; the message says which card or field and what to do."""


def card_name(key: str) -> str:
    """A card's name in decisions: its key's file name (``runs/<run>/cards/x.png`` -> ``x.png``)."""
    return posixpath.basename(key)


def proposed_cards(manifest: Manifest) -> dict[str, tuple[str, str]]:
    """The cards a seller can decide on: file name -> (key relative to the SKU, sha256)."""
    return {
        card_name(c.file): (c.file, manifest.files.get(c.file, ""))
        for c in manifest.cards
        if c.status == "published" and c.file
    }


def parse_decisions(data: bytes, manifest: Manifest, where: str = DECISIONS) -> Decisions:
    """Validate a decisions file; a :class:`DecisionsError` says what is wrong (see :func:`unknown_cards`)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecisionsError(
            f"{where} is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}); save it as UTF-8 "
            "JSON, see docs/review.md"
        ) from None
    try:
        decisions = Decisions.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        message = f"{where} is not a valid decisions file ({problems}); see docs/review.md"
        raise DecisionsError(message) from None
    return decisions


def read_decisions(output: Store, manifest: Manifest) -> Decisions | None:
    """The SKU's decisions (None when the seller has written none); a :class:`DecisionsError` when invalid.

    A file over ``DECISIONS_MAX_BYTES`` is refused from its size in the store, before it is downloaded (and
    the read itself stops past the limit).
    """
    key = sku_key(manifest.catalogue_id, manifest.sku, DECISIONS)
    try:
        data = output.read(key, max_bytes=DECISIONS_MAX_BYTES)
    except ObjectNotFound:
        return None
    except ObjectTooLarge:
        raise DecisionsError(
            f"{output.url(key)} is over the {DECISIONS_MAX_BYTES:,}-byte limit of a decisions file; write "
            "one with only the cards' decisions (a few KB), see docs/review.md"
        ) from None
    return parse_decisions(data, manifest, where=output.url(key))


def usable_decisions(output: Store, manifest: Manifest) -> tuple[Decisions | None, str | None]:
    """The SKU's decisions for a run of it, and why none when the file cannot be used: a run goes on without
    them (``publish-approved`` tells the seller), never fails for the seller's file."""
    try:
        return read_decisions(output, manifest), None
    except DecisionsError as exc:
        return None, str(exc)


def write_decisions(output: Store, manifest: Manifest, decisions: Decisions) -> str:
    """Write the SKU's ``review/decisions.json`` (as ``product-studio review`` does); return its URL."""
    key = sku_key(manifest.catalogue_id, manifest.sku, DECISIONS)
    output.write(key, decisions.to_json(), "application/json")
    return output.url(key)


def unknown_cards(decisions: Decisions, manifest: Manifest, where: str = DECISIONS) -> str | None:
    """What to tell the seller about decisions on cards the SKU does not propose (now), or None.

    They decide nothing; the others still count (a re-run or a retry can drop a card a seller decided on).
    """
    known = proposed_cards(manifest)
    unknown = sorted(set(decisions.cards) - set(known))
    if not unknown:
        return None
    return f"{where} names cards this SKU does not propose (now): {unknown}; the cards are {sorted(known)}"


def decide(
    manifest: Manifest,
    verdicts: dict[str, Verdict],
    *,
    note: str = "",
    by: str = "",
    at: str,
    earlier: Decisions | None = None,
) -> Decisions:
    """Decisions with ``verdicts`` (card file name -> verdict) added to ``earlier`` ones, bound to the cards'
    current sha256. Names are checked against the manifest (a ``DecisionsError`` lists the known ones)."""
    known = proposed_cards(manifest)
    unknown = sorted(set(verdicts) - set(known))
    if unknown:
        raise DecisionsError(
            f"no card named {unknown} in {manifest.sku}'s manifest; the cards are {sorted(known)}"
        )
    modes = {card_name(c.file): c.render.mode for c in manifest.cards if c.file}
    unscened = sorted(n for n, v in verdicts.items() if v == "retry" and modes.get(n) == "cutout")
    if unscened:
        raise DecisionsError(
            f"{unscened} show the seller's own photo (no scene to make again): approve or reject them; "
            "retry is for scene cards"
        )
    cards = dict(earlier.cards) if earlier else {}
    for name, verdict in verdicts.items():
        cards[name] = Decision(decision=verdict, sha256=known[name][1], note=note)
    return Decisions(cards=cards, by=by, at=at)


def current_decisions(decisions: Decisions, manifest: Manifest) -> dict[str, Decision]:
    """The decisions that hold for the manifest's cards now: stale ones (card changed since) are left out."""
    known = proposed_cards(manifest)
    return {name: d for name, d in decisions.cards.items() if name in known and known[name][1] == d.sha256}


def error_record(message: str, at: str) -> bytes:
    """What ``review/decisions-error.json`` holds."""
    return json.dumps({"error": message, "at": at}, indent=2).encode()


def json_schema() -> dict:
    """The JSON Schema of a decisions file (``docs/decisions.schema.json`` is this, written out)."""
    schema = Decisions.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA, **schema}


def verdicts_from(**names: list[str] | None) -> dict[str, Verdict]:
    """Card file name -> verdict from lists of names per verdict (``approve=[...]``, ``reject=[...]``, …);
    a ``DecisionsError`` names a card given two verdicts."""
    verdicts: dict[str, Verdict] = {}
    for verdict, cards in names.items():
        for name in cards or []:
            if name in verdicts:
                raise DecisionsError(f"card {name} is given two decisions ({verdicts[name]} and {verdict})")
            verdicts[name] = verdict  # type: ignore[assignment]
    return verdicts


def card_states(manifest: Manifest, decisions: Decisions | None) -> list[tuple[str, CardRecord, str, str]]:
    """Each proposed card: its name, record, the decision in force (``pending`` if none) and its note."""
    holding = current_decisions(decisions, manifest) if decisions else {}
    by_file = {c.file: c for c in manifest.cards}
    rows = []
    for name, (key, _) in proposed_cards(manifest).items():
        decision = holding.get(name)
        rows.append(
            (
                name,
                by_file[key],
                decision.decision if decision else "pending",
                decision.note if decision else "",
            )
        )
    return rows
