"""Review links for people without bucket credentials: presigned URLs that expire.

A presigned URL signs one object, so a page opened through one cannot follow its relative links into a
private bucket. :func:`share_sku_page` therefore writes a *shared copy* of the page whose every link (cards,
cutouts, originals, the manifest) is itself a presigned URL with the same expiry, under
``<sku>/review/shared/<token>.html``, and returns that copy's presigned URL. :func:`share_catalogue_index`
does the same for a catalogue's index, linking to shared copies of each SKU's page. Everything a link opens
stops working when it expires. Shared copies hold URLs that name the storage endpoint; they are never linked
from the normal pages.
"""

from __future__ import annotations

import re
import secrets

from product_studio.decisions import DecisionsError, read_decisions
from product_studio.layout import REVIEW_PAGE, catalogue_key, in_catalogue, shared_key, sku_key, sku_prefix
from product_studio.manifest import read_published
from product_studio.review import catalogue_rows, render_catalogue_index, render_review_page
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


def share_sku_page(output: Store, catalogue_id: str, sku: str, seconds: int) -> str:
    """A presigned URL of a shared copy of the SKU's review page; a ValueError when it is unpublished."""
    manifest = read_published(output, catalogue_id, sku)
    if manifest is None:
        raise ValueError(f"SKU {catalogue_id}/{sku} has no published run: nothing to review yet")
    try:
        decisions = read_decisions(output, manifest)
    except DecisionsError:
        decisions = None
    html = render_review_page(
        manifest,
        decisions=decisions,
        link=lambda key: output.presigned_url(sku_key(catalogue_id, sku, key), seconds),
    )
    return _write_shared(output, sku_prefix(catalogue_id, sku), html, seconds)


def share_catalogue_index(output: Store, catalogue_id: str, seconds: int) -> str:
    """A presigned URL of a shared copy of the catalogue's index, linking to shared copies of SKU pages."""
    rows = catalogue_rows(output, catalogue_id)
    pages = {
        in_catalogue(r.sku, REVIEW_PAGE): share_sku_page(output, catalogue_id, r.sku, seconds)
        for r in rows
        if r.page
    }

    def link(key: str) -> str:
        return pages.get(key) or output.presigned_url(catalogue_key(catalogue_id, key), seconds)

    return _write_shared(output, catalogue_id, render_catalogue_index(catalogue_id, rows, link=link), seconds)
