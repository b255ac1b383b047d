"""The batch flows: one catalogue (planned here, its SKUs run by batch runs) and the scheduled scan.

The catalogue flow reads as its story: plan (the SKUs and every identifier, decided up front), fan out (to
batch runs on the GPU work pool, ``settings.batch_deployment``, ``flows.batch``: one per worker slot, each
taking SKUs one at a time with its models loaded once; or, with no deployment set -- the CLI, the demo -- one
after another in this process), wait for them, and report (``catalogue-report.json``, the catalogue's review
index, a markdown artifact). One failing or crashed SKU run never fails the others.
"""

from __future__ import annotations

import re
import time

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed, State

from flows import catalogue_tasks, tasks
from flows.batch import run_sku_here
from product_studio.ingest import check_id, split_ids
from product_studio.manifest import new_run_id
from product_studio.publish import catalogue_table
from product_studio.records import SkuOutcome
from product_studio.reruns import batches
from product_studio.settings import Settings

POLL_SECONDS = 2.0
NOT_RUN = "not run: "
WAIT_SECONDS = 24 * 3600  # then a run still queued or running is reported failed (and run again)


@flow(name="product-catalogue", flow_run_name="{catalogue_id}")
def catalogue_flow(catalogue_id: str, force: bool = False) -> list[SkuOutcome] | State:
    """Every SKU of a ready catalogue: ``published``, ``skipped`` (unchanged; ``force`` redoes it) or
    ``failed`` each. A bad catalogue id or a broken worker configuration fails the run before any SKU starts;
    a run in which every SKU failed ends ``Failed`` (its outcomes are the state's data). While another run
    holds the catalogue's lease this one does nothing and ends ``Completed`` with no outcomes, its message
    starting with :data:`NOT_RUN`.
    """
    started, settings = time.monotonic(), Settings()
    check_id("catalogue", catalogue_id)
    with catalogue_tasks.holding_catalogue(settings, catalogue_id, settings.worker()) as lease:
        if isinstance(lease, str):  # another catalogue run works on it: this one writes nothing
            get_run_logger().warning("catalogue %s: not run, %s", catalogue_id, lease)
            return Completed(message=f"{NOT_RUN}{lease}", data=[])
        if not settings.batch_deployment:  # SKUs run here: a broken worker fails once, before anything else
            tasks.run_models(settings)
        fingerprint = catalogue_tasks.catalogue_fingerprint(settings, catalogue_id)
        skus, invalid = split_ids("SKU", catalogue_tasks.list_skus(settings, catalogue_id))
        identifiers = catalogue_tasks.plan_identifiers(settings, catalogue_id, skus)
        if settings.batch_deployment:
            outcomes = _in_batches(settings, catalogue_id, identifiers, force)
        else:
            outcomes = [run_sku_here(catalogue_id, sku, ident, force) for sku, ident in identifiers.items()]
        outcomes += [SkuOutcome.failed(catalogue_id, sku, why) for sku, why in invalid.items()]  # folders
        return _report(settings, catalogue_id, outcomes, fingerprint, time.monotonic() - started)


def _in_batches(
    settings: Settings, catalogue_id: str, identifiers: dict[str, str], force: bool
) -> list[SkuOutcome]:
    """Batch runs (one per worker slot) take the SKUs; each SKU's outcome once every batch run has ended.
    An SKU no batch run finished (its run crashed) is ``failed`` and worth running again (the next scan)."""
    from prefect.deployments import run_deployment

    run = str(runtime.flow_run.id or new_run_id())
    limit = _pool_limit(settings.batch_deployment)
    count = batches.batch_count(settings.batch_runs, limit, len(identifiers))
    parameters = {"catalogue_id": catalogue_id, "run": run, "identifiers": identifiers, "force": force}
    runs = [
        run_deployment(
            settings.batch_deployment,
            parameters=parameters,
            timeout=0,  # submit only; the work pool starts them on its workers
            flow_run_name=f"{catalogue_id}/batch-{i + 1}",
            tags=[f"catalogue:{catalogue_id}"],
        )
        for i in range(count)
    ]
    ended = {r.name: _wait(r.id).state for r in runs}
    outcomes = []
    for sku in identifiers:
        outcome = catalogue_tasks.batch_outcome(settings, catalogue_id, run, sku)
        if outcome is None:
            said = [f"{name}: {s.type.value.lower()} {s.message or ''}" for name, s in ended.items() if s]
            states = "; ".join(said)
            outcome = SkuOutcome.failed(catalogue_id, sku, f"no batch run finished it ({states})")
            outcome = outcome.model_copy(update={"again": True})
        outcomes.append(outcome)
    catalogue_tasks.clear_batches(settings, catalogue_id, run)
    return outcomes


def _report(
    settings: Settings, catalogue_id: str, outcomes: list[SkuOutcome], fingerprint: str, seconds: float
) -> list[SkuOutcome] | State:
    """The report, the review index and the artifact; the scan marker unless an SKU is worth running again;
    the run's end state."""
    report = catalogue_tasks.publish_report(settings, catalogue_id, outcomes, seconds)
    catalogue_tasks.publish_catalogue_index(settings, catalogue_id)
    create_markdown_artifact(
        key=_artifact_key(catalogue_id),
        markdown=f"# Catalogue {catalogue_id}\n\n{catalogue_table(outcomes)}\n\nReport: {report}\n",
        description=f"SKU outcomes of catalogue {catalogue_id}",
    )
    if not any(o.again for o in outcomes):  # else the scan runs the catalogue again next time
        catalogue_tasks.mark_scanned(settings, catalogue_id, fingerprint)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("published", "skipped", "failed")}
    get_run_logger().info("catalogue %s: %s; report %s", catalogue_id, counts, report)
    if outcomes and counts["failed"] == len(outcomes):  # nothing came of the run: it must not read Completed
        message = f"every SKU of {catalogue_id} failed ({len(outcomes)}); see {report}"
        return Failed(message=message, data=outcomes)
    return outcomes


def _artifact_key(catalogue_id: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "catalogue-" + re.sub(r"[^a-z0-9-]+", "-", catalogue_id.lower())


def _pool_limit(deployment: str) -> int | None:
    """The concurrency limit of the work pool ``deployment`` runs on (None: none set)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        pool = client.read_deployment_by_name(deployment).work_pool_name
        return client.read_work_pool(pool).concurrency_limit if pool else None


def _wait(flow_run_id):
    """The flow run once it has ended (or :data:`WAIT_SECONDS` have passed): the one polling loop."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + WAIT_SECONDS  # a paused pool or a lost worker must not hold the run forever
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        while not (run.state and run.state.is_final()) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            run = client.read_flow_run(flow_run_id)
        return run


@flow(name="product-new-catalogues")
def new_catalogues_flow() -> dict[str, str]:
    """Scheduled: a catalogue run for each ready catalogue that is new or has an SKU added or changed.

    Two listings decide (``reruns.catalogue_changes``). With a catalogue deployment set, each starts
    as its own flow run on the work pool; else they run here in turn. Returns catalogue id -> how it was
    started.
    """
    settings = Settings()
    started: dict[str, str] = {}
    for catalogue_id in catalogue_tasks.due_catalogues(settings):
        if catalogue_tasks.catalogue_running(settings, catalogue_id):
            started[catalogue_id] = "already running"  # its marker is written when it ends
            continue
        if settings.catalogue_deployment:
            from prefect.deployments import run_deployment

            if running_catalogue(catalogue_id):  # started, not yet holding the lease
                started[catalogue_id] = "already running"
                continue

            run = run_deployment(
                settings.catalogue_deployment,
                parameters={"catalogue_id": catalogue_id},
                timeout=0,
                flow_run_name=catalogue_id,
                tags=[f"catalogue:{catalogue_id}"],
            )
            started[catalogue_id] = f"flow run {run.name}"
        else:
            state = catalogue_flow(catalogue_id, return_state=True)
            started[catalogue_id] = state.type.value.lower()
    return started


def running_catalogue(catalogue_id: str) -> bool:
    """Whether a catalogue run of ``catalogue_id`` is scheduled, pending or running (Prefect's own record)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    live = FlowRunFilterState(
        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING])
    )
    flows = FlowFilter(name=FlowFilterName(any_=[catalogue_flow.name]))
    # Started by the scan (tagged) or by hand (named after the catalogue once it runs).
    which = [
        FlowRunFilter(state=live, tags=FlowRunFilterTags(all_=[f"catalogue:{catalogue_id}"])),
        FlowRunFilter(state=live, name=FlowRunFilterName(any_=[catalogue_id])),
    ]
    with get_client(sync_client=True) as client:
        return any(client.read_flow_runs(flow_filter=flows, flow_run_filter=f, limit=1) for f in which)
