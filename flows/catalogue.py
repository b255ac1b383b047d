"""The batch flows: one catalogue (every SKU, failures isolated) and the scheduled scan for new ones."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows import tasks
from flows.sku import sku_flow
from product_studio.ingest import check_id
from product_studio.records import SkuOutcome
from product_studio.settings import Settings


@flow(name="product-catalogue", flow_run_name="{catalogue_id}")
def catalogue_flow(catalogue_id: str) -> list[SkuOutcome]:
    """Every SKU of a ready catalogue; one failing SKU is reported and the others are still published.

    A bad catalogue id or a broken worker configuration fails the run before any SKU starts, and leaves no
    report (so the scheduled scan tries the catalogue again once the worker is fixed).
    """
    settings = Settings()
    check_id("catalogue", catalogue_id)
    settings.preflight()
    log = get_run_logger()
    outcomes: list[SkuOutcome] = []
    taken: list[str] = []  # identifiers stay distinct within a catalogue
    for sku in tasks.list_skus(settings, catalogue_id):
        state = sku_flow(catalogue_id, sku, taken, return_state=True)
        if state.is_completed():
            outcome: SkuOutcome = state.result()
            taken.append(outcome.identifier or "")
        else:
            exc = state.result(raise_on_failure=False)
            outcome = SkuOutcome.failed(
                catalogue_id, sku, exc if isinstance(exc, BaseException) else state.message
            )
            log.error("SKU %s failed: %s", sku, outcome.error)
        outcomes.append(outcome)
    report = tasks.publish_report(settings, catalogue_id, outcomes)
    published = sum(o.status == "published" for o in outcomes)
    log.info(
        "catalogue %s: %d published, %d failed; report %s",
        catalogue_id,
        published,
        len(outcomes) - published,
        report,
    )
    return outcomes


@flow(name="product-new-catalogues")
def new_catalogues_flow() -> dict[str, list[SkuOutcome]]:
    """Scheduled: run the catalogue flow for each ready catalogue that has no report yet."""
    settings = Settings()
    ready = tasks.find_ready_catalogues(settings)
    return {c: catalogue_flow(c) for c in ready if not tasks.has_report(settings, c)}
