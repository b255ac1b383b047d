"""What is true of an SKU's cards beyond the seller's decisions, for its pages: what is live on the
marketplace and since when (``review/live.json``, written by publish-approved), which cards could not be made
again (``review/retry-error.json``), and each card's state in the seller's words.

The words of every state a card can be in are worked out here, once, for the page and for
``review/status.json``: the small file a shared page's script reads when it opens, so a link made days ago
still tells the seller what holds now (a card gone live, a card made again since the link was made).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydantic import ValidationError

from product_studio.layout import LIVE_NOW, PAGE_STATUS, RETRY_ERROR, sku_key
from product_studio.manifest import Manifest, now
from product_studio.records import CardRecord, LiveNow, RetryFailure
from product_studio.review import wording
from product_studio.review.decisions import card_name
from product_studio.review.wording import marketplace_of, rule_problems, when
from product_studio.storage import ObjectNotFound, Store


@dataclass(frozen=True)
class CardNews:
    """What the marketplace and the retries say about an SKU's cards."""

    live: LiveNow = field(default_factory=LiveNow)
    retry: RetryFailure | None = None  # the last failed retry of the live run's cards


def write_live_now(output: Store, catalogue_id: str, sku: str, live: LiveNow) -> None:
    """``review/live.json``: what publish-approved just put live (and refused)."""
    body = live.model_dump_json(indent=2).encode()
    output.write(sku_key(catalogue_id, sku, LIVE_NOW), body, "application/json")


def read_news(output: Store, manifest: Manifest) -> CardNews:
    """The SKU's :class:`CardNews`; files that are missing or unreadable say nothing."""
    cat, sku = manifest.catalogue_id, manifest.sku
    try:
        live = LiveNow.model_validate_json(output.read(sku_key(cat, sku, LIVE_NOW), max_bytes=1_000_000))
    except (ObjectNotFound, ValidationError):
        live = LiveNow()
    try:
        body = output.read(sku_key(cat, sku, RETRY_ERROR), max_bytes=100_000)
        retry = RetryFailure.model_validate_json(body)
    except (ObjectNotFound, ValidationError):
        retry = None
    return CardNews(live=live, retry=retry if retry is not None and retry.run == manifest.run else None)


def state_words(card: CardRecord, sha256: str, news: CardNews, noncommercial: bool = False) -> dict[str, str]:
    """What the page says of ``card`` (its pixels: ``sha256``) in each decision state it can be in;
    ``noncommercial``: a model that made it is licensed for non-commercial use only, so it never goes live."""
    name = card_name(card.file or "")
    live = news.live.cards.get(name)
    live_now = live is not None and live.sha256 == sha256
    earlier_live = live is not None and not live_now
    market = marketplace_of(card)
    if noncommercial:
        approved = "Approved, but it cannot go live: " + wording.noncommercial(card)
    elif live_now:
        approved = f"Live on {market} since {when(live.since)}" if live.since else f"Live on {market}"
    elif name in news.live.refused:
        approved = "Approved, but it cannot go live: " + _refused(card)
    else:
        approved = f"Approved: it goes live on {market} at the next publish"
    retry = "Being made again"
    if news.retry is not None and name in news.retry.cards:
        tries = f"{news.retry.attempts} {'try' if news.retry.attempts == 1 else 'tries'}"
        retry = (
            f"Could not be made again ({tries}): approve or reject it as it is"
            if news.retry.given_up
            else "Being made again (the last try failed; it is tried again)"
        )
    return {
        "pending": "Waiting for you" + (f" (an earlier version is live on {market})" if earlier_live else ""),
        "approved": approved,
        "rejected": "Rejected" + (f": it comes off {market} at the next publish" if live is not None else ""),
        "retry": retry,
    }


def _refused(card: CardRecord) -> str:
    if not card.compliance.passed:
        return "; ".join(rule_problems(card)) or "it breaks a rule of the marketplace"
    return "a problem on our side, which we are looking into"


def page_status(manifest: Manifest, news: CardNews) -> dict:
    """``review/status.json``: the run and, per proposed card, its pixels and :func:`state_words` (nothing
    a seller may not see: it is read by shared pages)."""
    cards = {}
    for card in manifest.cards:
        if card.status == "published" and card.file:
            sha = manifest.files.get(card.file, "")
            words = state_words(card, sha, news, bool(manifest.noncommercial))
            cards[card_name(card.file)] = {"sha256": sha, "words": words}
    return {"run": manifest.run, "cards": cards, "updated": now()}


def write_page_status(output: Store, manifest: Manifest, news: CardNews) -> None:
    key = sku_key(manifest.catalogue_id, manifest.sku, PAGE_STATUS)
    output.write(key, json.dumps(page_status(manifest, news), indent=2).encode(), "application/json")
