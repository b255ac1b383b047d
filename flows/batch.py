"""The batch flow: one worker slot takes a catalogue's SKUs one at a time, its models loaded once.

A catalogue run on the work pool starts a few ``product-sku-batch`` runs (one per GPU slot) instead of one
run per SKU: a Prefect process worker starts every flow run in a new process, so an SKU run of its own pays
the imports and every model load again. A batch run loads them once, then takes the next SKU nobody has
finished or holds (``product_studio.reruns.batches``, under the SKU's lease) and runs it here as a subflow
(``product-sku``: its own flow run, logs, ``outcome.json`` and retries), until none is left. One bad SKU
never stops the batch; a batch run that crashes loses only the SKU it held.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows import catalogue_tasks, tasks
from flows.sku import sku_flow
from product_studio.ingest import check_id
from product_studio.records import SkuOutcome
from product_studio.settings import Settings


@flow(name="product-sku-batch", flow_run_name="{catalogue_id}/batch")
def sku_batch_flow(
    catalogue_id: str, run: str, identifiers: dict[str, str], force: bool = False
) -> list[SkuOutcome]:
    """The SKUs of catalogue run ``run`` (SKU -> identifier) that this batch run took, each ``published``,
    ``skipped`` or ``failed``. A broken worker configuration fails here, before any SKU is taken."""
    settings = Settings()
    check_id("catalogue", catalogue_id)
    tasks.run_models(settings)  # the one load of this worker's models; the first SKU's timings carry it
    log, outcomes = get_run_logger(), []
    for taken in catalogue_tasks.take_skus(settings, catalogue_id, run, list(identifiers)):
        outcome = run_sku_here(catalogue_id, taken.sku, identifiers[taken.sku], force, taken.lease.token)
        catalogue_tasks.finish_sku(settings, catalogue_id, run, taken, outcome)
        log.info("SKU %s: %s", taken.sku, outcome.status)
        outcomes.append(outcome)
    return outcomes


def run_sku_here(
    catalogue_id: str, sku: str, identifier: str | None, force: bool, lease_token: str = ""
) -> SkuOutcome:
    """The SKU as a subflow in this process; its failure becomes a ``failed`` outcome, never raised."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    # The parent run's own heartbeat already says this process is alive. A subflow's heartbeat thread
    # sleeps in 1-s steps and is joined when the subflow ends: up to a second per SKU, for nothing.
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        state = sku_flow(catalogue_id, sku, identifier, force, lease_token, return_state=True)
    if state.is_completed():
        return state.result()
    exc = state.result(raise_on_failure=False)
    return SkuOutcome.failed(catalogue_id, sku, exc if isinstance(exc, BaseException) else str(state.message))
