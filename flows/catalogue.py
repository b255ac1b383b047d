"""The batch flows: one catalogue (every SKU, failures isolated) and the scheduled scan for new ones."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.sku import IO_RETRIES, SkuFailed, sku_flow
from product_studio import ingest, publish
from product_studio.records import SkuOutcome
from product_studio.settings import Settings
from product_studio.storage import Store


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def list_skus(settings: Settings, catalogue_id: str) -> list[str]:
    return ingest.list_skus(Store(settings.incoming), catalogue_id)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def write_report(settings: Settings, catalogue_id: str, outcomes: list[SkuOutcome]) -> str:
    return publish.publish_catalogue_report(Store(settings.output), catalogue_id, outcomes)


@flow(name="product-catalogue", flow_run_name="{catalogue_id}")
def catalogue_flow(catalogue_id: str) -> list[SkuOutcome]:
    """Every SKU of a ready catalogue; one failing SKU is reported and the others are still published."""
    settings = Settings()
    log = get_run_logger()
    outcomes: list[SkuOutcome] = []
    taken: list[str] = []
    for sku in list_skus(settings, catalogue_id):
        state = sku_flow(catalogue_id, sku, taken, return_state=True)
        if state.is_completed():
            outcome: SkuOutcome = state.result()
            taken.append(outcome.identifier or "")
        else:
            exc = state.result(raise_on_failure=False)
            problems = exc.problems if isinstance(exc, SkuFailed) else []
            outcome = SkuOutcome(
                catalogue_id=catalogue_id,
                sku=sku,
                status="failed",
                error=str(exc) if isinstance(exc, BaseException) else state.message,
                problems=problems,
            )
            log.error("SKU %s failed: %s", sku, outcome.error)
        outcomes.append(outcome)
    report = write_report(settings, catalogue_id, outcomes)
    log.info(
        "catalogue %s: %d published, %d failed; report %s",
        catalogue_id,
        sum(o.status == "published" for o in outcomes),
        sum(o.status == "failed" for o in outcomes),
        report,
    )
    return outcomes


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def find_new_catalogues(settings: Settings) -> list[str]:
    output = Store(settings.output)
    return [
        c
        for c in ingest.list_ready_catalogues(Store(settings.incoming))
        if not output.exists(f"{c}/{publish.CATALOGUE_REPORT}")
    ]


@flow(name="product-new-catalogues")
def new_catalogues_flow() -> dict[str, list[SkuOutcome]]:
    """Scheduled: run the catalogue flow for each ready catalogue that has no report yet."""
    settings = Settings()
    return {c: catalogue_flow(c) for c in find_new_catalogues(settings)}
