"""Review: static HTML pages a seller opens straight from the bucket (relative links only).

One page per SKU (its proposed cards, the seller's decisions and how to make them) and one index per
catalogue (every SKU's status, decisions and cards). The HTML is in Jinja2 templates under
``product_studio/review/templates/``, rendered with autoescape on: every value from a manifest or a seller
is text.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Literal

import jinja2
from pydantic import BaseModel, ConfigDict, field_validator

from product_studio.layout import (
    CATALOGUE_REPORT,
    CONTACT_SHEET,
    PAGE_STATUS,
    REVIEW_PAGE,
    card_decision,
    catalogue_key,
    in_catalogue,
    run_key,
)
from product_studio.manifest import Manifest, read_published
from product_studio.records import CardRecord
from product_studio.review import wording
from product_studio.review.decisions import (
    Decision,
    Decisions,
    DecisionsError,
    Verdict,
    card_name,
    current_decisions,
    read_decisions,
)
from product_studio.review.status import CardNews, state_words
from product_studio.storage import Store

MODES = {
    "cutout": "your real product photo",
    "composite": "your real product, generated surroundings",
    "generate": "generated from the product model",
}
VERDICTS: dict[Verdict, str] = {"approve": "approved", "reject": "rejected", "retry": "retry requested"}
Count = Literal["pending", "approved", "rejected", "retry"]
COUNTS: tuple[Count, ...] = ("pending", "approved", "rejected", "retry")
_COUNTED: dict[Verdict, Count] = {"approve": "approved", "reject": "rejected", "retry": "retry"}
# How a page's state element says each state (``data-state`` carries the state itself).
STATE_WORDS: dict[Count, str] = {
    "pending": "waiting for you",
    "approved": "approved",
    "rejected": "rejected",
    "retry": "being made again",
}


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("product_studio.review", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["sentence"] = lambda text: text[:1].upper() + text[1:]
    env.globals |= {
        "modes": MODES,
        "verdicts": VERDICTS,
        "state_words": STATE_WORDS,
        "counts": COUNTS,
        "heading": wording.heading,
        "marketplace_of": wording.marketplace_of,
        "possessive": wording.possessive,
        "photo_problem": wording.photo_problem,
        "light_words": wording.light,
        "coming_words": wording.coming,
        "photo_set_words": wording.photo_set,
        "product_crop": product_crop,
        "label_words": wording.label_words,
        "rejected_words": wording.rejected,
    }
    return env


def _linker(at: str) -> Callable[[str], str]:
    """Links from the page at key ``at`` to other keys (all relative to the same folder): relative paths."""
    here = posixpath.dirname(at) or "."
    return lambda key: posixpath.relpath(key, here)


@dataclass(frozen=True)
class _Proposed:
    """A proposed card as the SKU page shows it."""

    card: CardRecord
    name: str
    decision: Decision | None  # one that still holds for this card
    state: Count  # the decision in force
    stale: bool  # the seller decided on earlier pixels
    commands: list[str]
    words: dict[str, str]  # what the page says of the card in each state (``status.state_words``)
    heading: str
    made: str
    checks: list[wording.Check]
    problems: list[str]  # the marketplace rules it breaks, in the seller's words
    noncommercial: str | None  # why it can never go live (a model licensed for non-commercial use only)
    numbers: list[tuple[str, str]]  # the scores behind ``checks``, for operators


@dataclass(frozen=True)
class _Pair:
    source: str
    cutout: str
    original: str | None
    not_for_composites: str | None = None
    advice: tuple[str, ...] = ()


def product_crop(card: CardRecord) -> str:
    """CSS showing the card's product framed as its cutout frames it (its longer side 1/1.16 of a square):
    beside the cutout, both show the product at the same scale."""
    if card.product is None:
        return ""
    left, top, right, bottom = card.product.box
    side = max(right - left, bottom - top) * 1.16
    x, y = (left + right) / 2 - side / 2, (top + bottom) / 2 - side / 2
    size = card.width / side * 100

    def at(offset: float, free: float) -> float:
        return 50.0 if abs(free) < 1 else offset / free * 100

    return (
        f"background-size:{size:.2f}% auto;"
        f"background-position:{at(x, card.width - side):.2f}% {at(y, card.height - side):.2f}%"
    )


def decide_commands(catalogue_id: str, sku: str, name: str, retry: bool = True) -> list[str]:
    """Commands to approve or reject card ``name``; with ``retry`` (scene cards), to ask for another try."""
    return [
        shlex.join(["product-studio", "review", catalogue_id, sku, f"--{verdict}", name])
        for verdict in VERDICTS
        if retry or verdict != "retry"
    ]


def decision_targets(
    manifest: Manifest,
    decisions: Decisions | None,
    put: Callable[[str], str],
    get: Callable[[str], str],
    since: float = 0.0,
    news: CardNews | None = None,
) -> dict:
    """What a page's buttons need for each proposed card of the SKU: the sha256 it decides on, whether it
    meets its format's rules and may be made again, the state in force, its words per state and the URLs
    that write and read its decision object (``put`` and ``get``: key relative to the SKU -> URL); the run
    and the URL of ``review/status.json`` (what holds when the page is opened). ``since``: when
    ``decisions.json`` was written (epoch seconds); a card's own object written before then gives way to the
    state in force."""
    holding = current_decisions(decisions, manifest) if decisions else {}
    news = news or CardNews()
    barred = bool(manifest.noncommercial)
    cards = {}
    for card in manifest.cards:
        if card.status != "published" or not card.file:
            continue
        name = card_name(card.file)
        decision = holding.get(name)
        if decision is not None and decision.decision == "retry" and card.kind != "scene":
            decision = None  # the seller's own photo cannot be made again: as if undecided
        state = _COUNTED[decision.decision] if decision else "pending"
        sha = manifest.files.get(card.file, "")
        cards[name] = {
            "sha256": sha,
            "passed": card.compliance.passed and not barred,  # what "approve every card ..." approves
            "retry": card.kind == "scene",
            "initial": state,
            "state": state,
            "words": state_words(card, sha, news, barred),
            "title": wording.heading(card),
            "put": put(card_decision(name)),
            "get": get(card_decision(name)),
        }
    counts = dict.fromkeys(COUNTS, 0)
    for target in cards.values():
        counts[target["state"]] += 1
    return {
        "cards": cards,
        "counts": counts,
        "since": int(since) * 1000,  # whole seconds, as Last-Modified
        "run": manifest.run,
        "status": get(PAGE_STATUS),
    }


def page_writes(targets: dict[str, dict], expires_at: float, until: str = "") -> dict:
    """The data a page's script reads: each SKU's :func:`decision_targets`, when its URLs expire (epoch
    seconds) and the words for each state; ``until`` says the expiry in words."""
    return {"skus": targets, "expires": int(expires_at * 1000), "until": until, "words": STATE_WORDS}


def render_review_page(
    manifest: Manifest,
    at: str = REVIEW_PAGE,
    decisions: Decisions | None = None,
    link: Callable[[str], str] | None = None,
    news: CardNews | None = None,
    writes: dict | None = None,
) -> str:
    """HTML for the SKU page at key ``at`` (relative to the SKU); every link is relative to the page.

    The page is the seller's: one state per card in words, whether it looks like their product and meets
    its marketplace's rules, the numbers behind a "details" toggle; no identifier, prompt, model or path.
    It opens from the bucket, a synced folder or a static website: it never names an absolute URL.
    ``decisions`` are the seller's; those about cards that changed since show as needing a new look.
    ``link`` (key relative to the SKU -> URL) replaces the relative links: a shared page's presigned URLs.
    ``news``: what is live and since when, approved cards that could not go live, failed retries.
    ``writes`` (:func:`page_writes`): buttons that write each card's decision object, and their script.
    """
    holding = current_decisions(decisions, manifest) if decisions else {}
    decided = set(decisions.cards) if decisions else set()
    news = news or CardNews()
    proposed = [
        _proposed(manifest, card, holding.get(card_name(card.file)), card_name(card.file) in decided, news)
        for card in manifest.cards
        if card.status == "published" and card.file
    ]
    pairs = [
        _Pair(
            c.source,
            c.preview or c.file,
            manifest.originals.get(c.source),
            c.not_for_composites,
            tuple(c.advice),
        )
        for c in manifest.cutouts
    ]
    return (
        _environment()
        .get_template("sku.html.j2")
        .render(
            m=manifest,
            title=manifest.title or manifest.sku,
            proposed=proposed,
            rejected=[c for c in manifest.cards if c.status == "rejected"],
            pairs=pairs,
            previews={c.file: c.preview for c in manifest.cutouts if c.preview},
            refused={p.file for p in manifest.inputs.problems},  # downloaded, then refused by cleaning
            unfit={c.source: c.not_for_composites for c in manifest.cutouts if c.not_for_composites},
            link=link or _linker(at),
            writes=writes,
            made_on=wording.when(manifest.published or manifest.created),
            tally={state: sum(p.state == state for p in proposed) for state in COUNTS},
        )
    )


def _proposed(
    manifest: Manifest, card: CardRecord, decision: Decision | None, decided: bool, news: CardNews
) -> _Proposed:
    name = card_name(card.file or "")
    if decision is not None and decision.decision == "retry" and card.kind != "scene":
        decision = None  # the seller's own photo cannot be made again: as if undecided
    return _Proposed(
        card=card,
        name=name,
        decision=decision,
        state=_COUNTED[decision.decision] if decision else "pending",
        stale=decided and decision is None,
        commands=decide_commands(manifest.catalogue_id, manifest.sku, name, card.kind == "scene"),
        words=state_words(card, manifest.files.get(card.file or "", ""), news, bool(manifest.noncommercial)),
        noncommercial=wording.noncommercial(card) if manifest.noncommercial else None,
        heading=wording.heading(card),
        made=wording.made(card),
        checks=wording.quality(card),
        problems=wording.rule_problems(card),
        numbers=wording.numbers(card),
    )


def decision_counts(manifest: Manifest, decisions: Decisions | None = None) -> dict[Count, int]:
    """How many of the SKU's proposed cards are pending, approved, rejected or sent for a retry.

    A card whose decision is stale (it changed since) is pending again.
    """
    holding = current_decisions(decisions, manifest) if decisions else {}
    counts = dict.fromkeys(COUNTS, 0)
    for card in manifest.cards:
        if card.status == "published" and card.file:
            decision = holding.get(card_name(card.file))
            counts[_COUNTED[decision.decision] if decision else "pending"] += 1
    return counts


class SkuRow(BaseModel):
    """One SKU on a catalogue's review index; every key is relative to the catalogue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: str
    title: str = ""
    status: Literal["published", "skipped", "failed"]
    error: str | None = None
    page: str | None = None  # the SKU's review page, e.g. "<sku>/review/index.html"
    thumbnails: list[str] = []  # card keys
    contact_sheet: str | None = None
    decisions: dict[Count, int] = {}
    noncommercial: bool = False  # made by a model licensed for non-commercial use only: never goes live

    @field_validator("page", "contact_sheet")
    @classmethod
    def _relative(cls, key: str | None) -> str | None:
        if key is not None:
            _check_relative(key)
        return key

    @field_validator("thumbnails")
    @classmethod
    def _all_relative(cls, keys: list[str]) -> list[str]:
        for key in keys:
            _check_relative(key)
        return keys

    @classmethod
    def from_manifest(
        cls, manifest: Manifest, decisions: Decisions | None = None, contact_sheet: str | None = None
    ) -> SkuRow:
        """The row of a published SKU: its page, proposed cards and decision counts."""
        sku = manifest.sku
        return cls(
            sku=sku,
            title=manifest.title,
            status="published",
            page=in_catalogue(sku, REVIEW_PAGE),
            thumbnails=[
                in_catalogue(sku, c.file) for c in manifest.cards if c.status == "published" and c.file
            ],
            contact_sheet=contact_sheet,
            decisions=decision_counts(manifest, decisions),
            noncommercial=bool(manifest.noncommercial),
        )


def _check_relative(key: str) -> None:
    if not key or key.startswith("/") or "://" in key or ".." in key.split("/"):
        raise ValueError(f"{key!r} is not a key relative to the catalogue (e.g. 'sku1/review/index.html')")


def catalogue_rows(output: Store, catalogue_id: str) -> list[SkuRow]:
    """The rows of the catalogue's review index, one per SKU of its last report."""
    report = json.loads(output.read(catalogue_key(catalogue_id, CATALOGUE_REPORT)))
    rows = []
    for entry in report["skus"]:
        sku, status = entry["sku"], entry["status"]
        manifest = read_published(output, catalogue_id, sku)
        if manifest is None:
            rows.append(SkuRow(sku=sku, status=status, error=entry.get("reason") or entry.get("error")))
            continue
        try:
            decisions = read_decisions(output, manifest)
        except DecisionsError:
            decisions = None  # its error is in review/decisions-error.json; every card shows as pending
        has_sheet = run_key(manifest.run, CONTACT_SHEET) in manifest.files
        sheet = in_catalogue(sku, CONTACT_SHEET) if has_sheet else None
        row = SkuRow.from_manifest(manifest, decisions, contact_sheet=sheet)
        error = entry.get("reason") if status == "failed" else None
        rows.append(row.model_copy(update={"status": status, "error": error}))
    return rows


def render_catalogue_index(
    catalogue_id: str,
    rows: list[SkuRow],
    at: str = REVIEW_PAGE,
    link: Callable[[str], str] | None = None,
    writes: dict | None = None,
) -> str:
    """HTML for the catalogue's index at key ``at`` (relative to the catalogue); links are relative, unless
    ``link`` (key relative to the catalogue -> URL) says otherwise. ``writes`` (:func:`page_writes`): buttons
    that approve each SKU's passing cards."""
    totals = dict.fromkeys(("published", "skipped", "failed"), 0)
    for row in rows:
        totals[row.status] += 1
    totals["pending"] = sum(row.decisions.get("pending", 0) for row in rows)
    return (
        _environment()
        .get_template("catalogue.html.j2")
        .render(
            catalogue_id=catalogue_id,
            rows=rows,
            totals=totals,
            status_words={
                "published": "new cards made for your review",
                "skipped": "unchanged since the last run",
                "failed": "its cards could not be made",
            },
            link=link or _linker(at),
            writes=writes,
        )
    )
