"""Prefect events that tell people about an SKU: its cards are ready for review, approved cards went live.

Each names the catalogue, the SKU, the review page's ``s3://`` URL and, with
``PRODUCT_STUDIO_REVIEW_LINK_SECONDS`` set, a fresh review link (a shared page where the seller decides, valid
that long; off by default, as a shared page names the storage endpoint). An automation turns them into a
webhook call (``infra/automation-webhook.yaml``); nothing here sends mail. A failure to make the link is
logged and the event still goes out without it: telling people never fails a run.
"""

from __future__ import annotations

from prefect.events import emit_event
from prefect.logging import get_logger

from product_studio.layout import LISTING, REVIEW_PAGE, sku_key
from product_studio.marketplace.approvals import SkuApproval
from product_studio.review.links import share_sku_page
from product_studio.settings import Settings
from product_studio.storage import StorageError

REVIEW_READY = "product-studio.review.ready"
REVIEW_PREVIEW = "product-studio.review.preview"
CARDS_LIVE = "product-studio.cards.live"


def _link(settings: Settings, catalogue_id: str, sku: str) -> str | None:
    if not settings.review_link_seconds:
        return None
    try:
        return share_sku_page(
            settings.store("output"), catalogue_id, sku, settings.review_link_seconds, write=True
        )
    except (StorageError, ValueError) as exc:
        get_logger(__name__).warning("SKU %s/%s: no review link for the event: %s", catalogue_id, sku, exc)
        return None


def _emit(settings: Settings, event: str, catalogue_id: str, sku: str, payload: dict) -> None:
    page = settings.store("output").url(sku_key(catalogue_id, sku, REVIEW_PAGE))
    link = _link(settings, catalogue_id, sku)
    emit_event(
        event=event,
        resource={
            "prefect.resource.id": f"product-studio.sku.{catalogue_id}.{sku}",
            "prefect.resource.name": f"{catalogue_id}/{sku}",
        },
        payload={"catalogue": catalogue_id, "sku": sku, "review_link": link, "review_page": page, **payload},
    )


def review_ready(settings: Settings, catalogue_id: str, sku: str) -> None:
    """``product-studio.review.ready``: the SKU's new cards wait for the seller's decisions."""
    _emit(settings, REVIEW_READY, catalogue_id, sku, {})


def review_preview(settings: Settings, catalogue_id: str, sku: str, coming: list[str]) -> None:
    """``product-studio.review.preview``: the SKU's first cards wait for the seller while its LoRA trains;
    ``coming`` names the cards still to be made."""
    _emit(settings, REVIEW_PREVIEW, catalogue_id, sku, {"coming": coming})


def cards_live(settings: Settings, result: SkuApproval) -> None:
    """``product-studio.cards.live``: publish-approved changed what is live for the SKU."""
    cat, sku = result.catalogue_id, result.sku
    _emit(
        settings,
        CARDS_LIVE,
        cat,
        sku,
        {
            "listing": settings.store("marketplace").url(sku_key(cat, sku, LISTING)),
            "live": result.live,
            "added": result.added,
            "removed": result.removed,
        },
    )
