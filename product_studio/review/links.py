"""Review links for people without bucket credentials: presigned URLs that expire.

A presigned URL signs one object, so a page opened through one cannot follow its relative links into a
private bucket. :func:`share_sku_page` therefore writes a *shared copy* of the page whose every link (cards,
cutouts, originals, the manifest) is itself a presigned URL with the same expiry, under
``<sku>/review/shared/<token>.html``, and returns that copy's presigned URL. :func:`share_catalogue_index`
does the same for a catalogue's index, linking to shared copies of each SKU's page. Everything a link opens
stops working when it expires. Shared copies hold URLs that name the storage endpoint; they are never linked
from the normal pages.

With ``write`` the shared pages also decide: for each proposed card a presigned PUT URL that can write only
that card's ``review/decisions/<card>.json`` (with ``application/json``), and a presigned GET URL to read it
back, so the page shows what storage holds. Nothing else can be written with them, and they expire with the
page. What a page writes is validated by the code that reads it (:mod:`product_studio.review.decisions`).
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime

from product_studio.layout import REVIEW_PAGE, catalogue_key, in_catalogue, shared_key, sku_key, sku_prefix
from product_studio.manifest import Manifest, read_published
from product_studio.review.decisions import (
    CONTENT_TYPE,
    Decisions,
    DecisionsError,
    decisions_written,
    read_decisions,
)
from product_studio.review.pages import (
    catalogue_rows,
    decision_targets,
    page_writes,
    render_catalogue_index,
    render_review_page,
)
from product_studio.review.status import CardNews, read_news
from product_studio.storage import Store

MAX_SECONDS = 7 * 24 * 3600  # the longest a SigV4 presigned URL may live
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_expiry(text: str) -> int:
    """Seconds from ``90s``, ``15m``, ``1h``, ``7d`` (or a bare number of seconds); 1 s to 7 days."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text or "")
    if not match:
        raise ValueError(f"expiry {text!r} is not a duration such as 90s, 15m, 1h or 7d")
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not 1 <= seconds <= MAX_SECONDS:
        raise ValueError(f"expiry {text!r} is {seconds} s; presigned links last from 1 s to 7 days")
    return seconds


def _write_shared(output: Store, prefix: str, html: str, seconds: int) -> str:
    key = shared_key(prefix, secrets.token_urlsafe(12))
    output.write(key, html.encode(), "text/html; charset=utf-8")
    return output.presigned_url(key, seconds)


def _expiry(seconds: int) -> tuple[float, str]:
    """When links made now for ``seconds`` expire: epoch seconds, and in words (UTC)."""
    at = time.time() + seconds
    return at, datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _sku_targets(
    output: Store, manifest: Manifest, decisions: Decisions | None, seconds: int, news: CardNews
) -> dict:
    """Presigned URLs per proposed card: a PUT that writes only that card's decision object (the signature
    covers the bucket, the key and the content type) and a GET that reads it back."""
    cat, sku = manifest.catalogue_id, manifest.sku
    return decision_targets(
        manifest,
        decisions,
        put=lambda key: output.presigned_put_url(sku_key(cat, sku, key), seconds, CONTENT_TYPE),
        get=lambda key: output.presigned_url(sku_key(cat, sku, key), seconds),
        since=decisions_written(output, manifest),
        news=news,
    )


def _published(output: Store, catalogue_id: str, sku: str) -> tuple[Manifest, Decisions | None]:
    manifest = read_published(output, catalogue_id, sku)
    if manifest is None:
        raise ValueError(f"SKU {catalogue_id}/{sku} has no published run: nothing to review yet")
    try:
        decisions = read_decisions(output, manifest)
    except DecisionsError:
        decisions = None  # its error is in review/decisions-error.json; every card shows as pending
    return manifest, decisions


def share_sku_page(output: Store, catalogue_id: str, sku: str, seconds: int, write: bool = False) -> str:
    """A presigned URL of a shared copy of the SKU's review page; a ValueError when it is unpublished.

    With ``write``, the page has buttons that write each card's decision with presigned PUT URLs.
    """
    return _share_sku(output, catalogue_id, sku, seconds, write)[0]


def _share_sku(
    output: Store, catalogue_id: str, sku: str, seconds: int, write: bool
) -> tuple[str, dict | None]:
    """:func:`share_sku_page`, and the page's :func:`decision_targets` when it writes."""
    manifest, decisions = _published(output, catalogue_id, sku)
    news = read_news(output, manifest)
    targets = _sku_targets(output, manifest, decisions, seconds, news) if write else None
    html = render_review_page(
        manifest,
        decisions=decisions,
        link=lambda key: output.presigned_url(sku_key(catalogue_id, sku, key), seconds),
        news=news,
        writes=page_writes({sku: targets}, *_expiry(seconds)) if targets else None,
    )
    return _write_shared(output, sku_prefix(catalogue_id, sku), html, seconds), targets


def share_catalogue_index(output: Store, catalogue_id: str, seconds: int, write: bool = False) -> str:
    """A presigned URL of a shared copy of the catalogue's index, linking to shared copies of SKU pages.

    With ``write``, those pages can decide, and the index approves each SKU's passing cards.
    """
    rows = catalogue_rows(output, catalogue_id)
    pages, targets = {}, {}
    for row in rows:
        if row.page:
            pages[in_catalogue(row.sku, REVIEW_PAGE)], sku_targets = _share_sku(
                output, catalogue_id, row.sku, seconds, write
            )
            if sku_targets is not None:
                targets[row.sku] = sku_targets

    def link(key: str) -> str:
        return pages.get(key) or output.presigned_url(catalogue_key(catalogue_id, key), seconds)

    writes = page_writes(targets, *_expiry(seconds)) if write else None
    html = render_catalogue_index(catalogue_id, rows, link=link, writes=writes)
    return _write_shared(output, catalogue_id, html, seconds)


CORS_RULE_ID = "product-studio-review-pages"
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?")


def page_cors_rule(origins: list[str]) -> dict:
    """The bucket CORS rule that lets review pages served from ``origins`` (a CDN or website domain) read
    and write decision objects with their presigned URLs; a ValueError names an origin that is not
    ``scheme://host[:port]``.

    CORS is per bucket, not per key: it only lets those origins make the requests. What can be written is
    still decided by the presigned URLs themselves (one card's decision object each, until they expire).
    """
    bad = [o for o in origins if not _ORIGIN.fullmatch(o)]
    if bad or not origins:
        raise ValueError(
            f"origin(s) {bad or origins} are not like https://reviews.example.com (scheme, host, optional "
            "port; no path, no trailing slash)"
        )
    return {
        "ID": CORS_RULE_ID,
        "AllowedOrigins": sorted(set(origins)),
        "AllowedMethods": ["GET", "PUT"],
        "AllowedHeaders": ["content-type"],  # the one header the page's PUT sets (its value is signed)
        "ExposeHeaders": ["Last-Modified", "ETag"],  # the page compares when decisions were written
        "MaxAgeSeconds": 3600,
    }


def apply_page_cors(output: Store, origins: list[str]) -> dict:
    """Put :func:`page_cors_rule` on the output bucket, keeping its other CORS rules; return the rule."""
    rule = page_cors_rule(origins)
    kept = [r for r in output.cors_rules() if r.get("ID") != CORS_RULE_ID]
    output.set_cors_rules([*kept, rule])
    return rule
