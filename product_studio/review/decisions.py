"""Seller decisions, beside an SKU's results in the output location, in two shapes that are read together:

- ``<catalogue>/<sku>/review/decisions/<card>.json``: one card's decision (what the review pages write, one
  object per card, so two people deciding different cards at the same moment never overwrite each other)::

    {"decision": "retry", "sha256": "41ab...", "note": "the spout looks bent",
     "by": "seller@example.com", "at": "2026-11-27T10:00:00+00:00"}

- ``<catalogue>/<sku>/review/decisions.json``: many cards at once (``product-studio review``, a UI)::

    {"cards": {"amazon-main.png": {"decision": "approve", "sha256": "9f2c...", "note": ""}},
     "by": "seller@example.com", "at": "2026-11-27T10:00:00+00:00"}

For each card the latest word holds: the object the store wrote last (its own clock, ``LastModified``; a
per-card object on a tie). A card is named by its file name (the last part of its key in ``manifest.json``)
*and* the sha256 of the card the seller looked at: a decision about a card that has changed since (a re-run or
a retry made new pixels) is *stale* and decides nothing. The JSON Schema (both shapes) is
``docs/decisions.schema.json``.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from product_studio.layout import (
    DECISIONS,
    DECISIONS_DIR,
    DECISIONS_MAX_BYTES,
    card_of_decision,
    sku_key,
)
from product_studio.manifest import Manifest
from product_studio.records import CardRecord
from product_studio.storage import ObjectNotFound, ObjectTooLarge, Store
from product_studio.text import printable

SCHEMA = "product-studio/decisions/v1"
CONTENT_TYPE = "application/json"  # the only content type a review page may write a decision with

Verdict = Literal["approve", "reject", "retry"]


class Decision(BaseModel):
    """A seller's word on one card."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: Verdict
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the sha256 of the card decided on")
    note: str = Field("", max_length=2000)


class CardDecision(Decision):
    """One card's decision, alone in ``review/decisions/<card>.json`` (the card is named by the key)."""

    by: str = Field("", max_length=200)
    at: str = Field("", max_length=64)


class Decisions(BaseModel):
    """Everything a seller decided about one SKU's cards."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_: Literal["product-studio/decisions/v1"] = Field(SCHEMA, alias="schema")
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


def _problems(exc: ValidationError) -> str:
    """Each validation error as ``field: message``."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())


def _json_once(data: bytes, where: str, what: str = "decisions file") -> Any:
    """``data`` as JSON; a key given twice in one object (one card decided twice: which one counts?) or
    anything not JSON is a :class:`DecisionsError`."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                raise DecisionsError(
                    f"{where} names '{printable(key)}' twice in one object; keep one decision per card"
                )
            seen[key] = value
        return seen

    try:
        return json.loads(data, object_pairs_hook=pairs)
    except ValueError as exc:
        if isinstance(exc, DecisionsError):
            raise
        raise DecisionsError(f"{where} is not a valid {what} (not JSON: {exc}); see docs/review.md") from None


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
        decisions = Decisions.model_validate(_json_once(data, where))
    except ValidationError as exc:
        message = f"{where} is not a valid decisions file ({_problems(exc)}); see docs/review.md"
        raise DecisionsError(message) from None
    return decisions


def parse_card_decision(data: bytes, where: str) -> CardDecision:
    """Validate one card's decision object; a :class:`DecisionsError` says what is wrong."""
    try:
        return CardDecision.model_validate(_json_once(data, where, "card decision"))
    except ValidationError as exc:
        raise DecisionsError(
            f"{where} is not a valid card decision ({_problems(exc)}): decide that card again on the "
            "review page (docs/review.md)"
        ) from None


def read_decisions(output: Store, manifest: Manifest) -> Decisions | None:
    """The SKU's decisions, both shapes together (None when the seller has written none).

    A :class:`DecisionsError` when ``decisions.json`` is invalid; an invalid per-card object decides nothing
    (:func:`load_decisions` says why).
    """
    return load_decisions(output, manifest)[0]


def load_decisions(output: Store, manifest: Manifest) -> tuple[Decisions | None, list[str]]:
    """The SKU's decisions (see the module) and what is wrong with the per-card objects that decide nothing.

    ``decisions.json`` that does not validate raises a :class:`DecisionsError`, as it always did.
    """
    key = sku_key(manifest.catalogue_id, manifest.sku, DECISIONS)
    under = sku_key(manifest.catalogue_id, manifest.sku, "")
    # One listing finds both shapes and when the store wrote each: review/decisions.json, review/decisions/*.
    written = output.modified(sku_key(manifest.catalogue_id, manifest.sku, DECISIONS_DIR))
    whole: Decisions | None = None
    if key in written:
        with contextlib.suppress(ObjectNotFound):  # removed since the listing
            whole = parse_decisions(_read_limited(output, key), manifest, where=output.url(key))
    cards = dict(whole.cards) if whole else {}
    problems = []
    for object_key, at in sorted(written.items()):
        if not object_key.startswith(under + DECISIONS_DIR + "/"):
            continue  # decisions.json, decisions-error.json
        name = card_of_decision(object_key.removeprefix(under))
        try:
            if name is None:
                raise DecisionsError(f"{output.url(object_key)} is not named <card file name>.json")
            one = parse_card_decision(_read_limited(output, object_key), output.url(object_key))
        except DecisionsError as exc:
            problems.append(f"{exc}; it decides nothing")
            continue
        except ObjectNotFound:  # removed since the listing
            continue
        if whole is None or name not in whole.cards or at >= written[key]:
            cards[name] = Decision(decision=one.decision, sha256=one.sha256, note=one.note)
    if whole is None and not cards:
        return None, problems
    return (whole or Decisions()).model_copy(update={"cards": cards}), problems


def _read_limited(output: Store, key: str) -> bytes:
    """A decisions object's bytes; one over ``DECISIONS_MAX_BYTES`` is refused from its size in the store,
    before it is downloaded (and the read itself stops past the limit)."""
    try:
        return output.read(key, max_bytes=DECISIONS_MAX_BYTES)
    except ObjectTooLarge:
        raise DecisionsError(
            f"{output.url(key)} is over the {DECISIONS_MAX_BYTES:,}-byte limit of a decisions file; write "
            "one with only the cards' decisions (a few KB), see docs/review.md"
        ) from None


def decisions_written(output: Store, manifest: Manifest) -> float:
    """When the store wrote the SKU's ``decisions.json`` (epoch seconds; 0 when there is none): a per-card
    object written before it gives way to it (see the module)."""
    key = sku_key(manifest.catalogue_id, manifest.sku, DECISIONS)
    return output.modified(key).get(key, 0.0)


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
    """The JSON Schema of both shapes: ``decisions.json`` (``Decisions``) and ``decisions/<card>.json``
    (``CardDecision``); ``docs/decisions.schema.json`` is this, written out."""
    schema = TypeAdapter(Decisions | CardDecision).json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA,
        "title": "Seller decisions: review/decisions.json or review/decisions/<card>.json",
        **schema,
    }


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
