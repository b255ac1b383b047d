"""The publish-approved flow: sellers' approvals go live in the marketplace location; retries are started.

Scheduled (every SKU whose decisions or manifest changed since the last run, found from listings) or for one
catalogue. Each SKU is published on its own, under its lease: one SKU's bad decisions file or storage error
never stops the others, and an SKU whose run holds its lease is published by the next run. An SKU with cards
sent for another try gets a retry run (``settings.retry_deployment`` on the GPU pool, else here). Catalogue
review indexes are refreshed at the end.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows import catalogue_tasks, events
from flows.retry import retry_flow
from product_studio.ingest import check_id
from product_studio.marketplace.approvals import SkuApproval
from product_studio.settings import Settings
from product_studio.text import printable


@flow(name="product-publish-approved")
def publish_approved_flow(catalogue_id: str | None = None) -> list[SkuApproval]:
    """Publish the approved cards of every SKU with new decisions (of one catalogue, when named)."""
    settings = Settings()
    if catalogue_id is not None:
        check_id("catalogue", catalogue_id)
    settings.store("marketplace").check_bucket()  # a typo'd bucket is said now, not when a card is approved
    log = get_run_logger()
    results: list[SkuApproval] = []
    for (cat, sku), marker in catalogue_tasks.due_approvals(settings, catalogue_id).items():
        state = catalogue_tasks.publish_approved(settings, cat, sku, return_state=True)
        if not state.is_completed():
            error = str(state.result(raise_on_failure=False))
            log.error("SKU %s/%s: approvals not published: %s", cat, sku, printable(error, 2000))
            results.append(SkuApproval(catalogue_id=cat, sku=sku, status="error", error=error))
            continue  # no marker: the next run tries again
        result: SkuApproval = state.result()
        results.append(result)
        if result.status == "busy":  # no marker: the next run publishes it
            log.warning("SKU %s/%s: not published now: %s", cat, sku, printable(result.error or ""))
            continue
        if result.status == "updated":
            events.cards_live(settings, result)
        if result.status == "error":
            log.warning("SKU %s/%s: %s", cat, sku, printable(result.error or "", 2000))
        for name, why in result.refused.items():
            log.warning("SKU %s/%s: %s not published: %s", cat, sku, printable(name), printable(why, 2000))
        if result.retry and (failed := catalogue_tasks.retry_given_up(settings, cat, sku, result.retry)):
            result.retry_error = failed.message()  # the seller's review/retry-error.json says so too
            log.error("SKU %s/%s: %s", cat, sku, printable(result.retry_error, 2000))
        elif result.retry:  # no marker: until the retry's new cards are published, the next run checks again
            if error := _start_retry(settings, cat, sku):
                result.retry_error = f"making {', '.join(result.retry)} again failed: {error}"
            continue
        catalogue_tasks.mark_approvals_done(settings, cat, sku, marker)
    for cat in sorted({r.catalogue_id for r in results}):
        if catalogue_tasks.has_report(settings, cat):
            catalogue_tasks.publish_catalogue_index(settings, cat)
    return results


def _start_retry(settings: Settings, catalogue_id: str, sku: str) -> str | None:
    """Start the SKU's retry run: on the retry deployment, or here (then why it failed, if it did)."""
    if settings.retry_deployment:
        from prefect.deployments import run_deployment

        run_deployment(
            settings.retry_deployment,
            parameters={"catalogue_id": catalogue_id, "sku": sku},
            timeout=0,
            flow_run_name=f"{catalogue_id}/{sku}-retry",
            tags=[f"catalogue:{catalogue_id}", f"sku:{sku}"],
        )
        return None
    state = retry_flow(catalogue_id, sku, return_state=True)  # its failure is the seller's to know, not ours
    return None if state.is_completed() else str(state.result(raise_on_failure=False))
