"""Prefect tasks for a catalogue's bookkeeping: its SKUs and identifiers, outcomes and report, the scheduled
scan's markers, and the sellers' approvals. Each wraps one library call; storage I/O is retried."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.tasks import IO_RETRIES
from product_studio import identifiers, ingest, leases, manifest, publish
from product_studio.marketplace import approvals, retry_failures
from product_studio.models import load_tokenizer
from product_studio.records import SkuOutcome
from product_studio.reruns import batches, catalogue_changes
from product_studio.settings import Settings

# Renewed every quarter of it by a thread, whatever the run waits on: a short lease lets the next scan take
# over a catalogue whose run was killed within minutes, not hours.
CATALOGUE_LEASE_SECONDS = 600


@contextmanager
def holding_catalogue(settings: Settings, catalogue_id: str, owner: str) -> Iterator[leases.Lease | str]:
    """The catalogue's lease for the block, renewed in the background (one catalogue run at a time: a second
    one does nothing, so it never writes a report or an SKU's outcome over the running one's), or why another
    run holds it."""
    seconds = min(settings.lease_seconds, CATALOGUE_LEASE_SECONDS)
    got = leases.catalogue_lease(settings.store("output"), catalogue_id, owner, seconds)
    if not isinstance(got, leases.Lease):
        yield leases.held_by(got, "the catalogue")
        return
    try:
        with leases.kept(got):
            yield got
    finally:
        got.release()


def catalogue_running(settings: Settings, catalogue_id: str) -> str | None:
    """Why the catalogue may not be started now (a run holds its lease), or None."""
    held = leases.catalogue_running(settings.store("output"), catalogue_id)
    return leases.held_by(held, "the catalogue") if held else None


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def list_skus(settings: Settings, catalogue_id: str) -> list[str]:
    return ingest.list_skus(settings.store("incoming"), catalogue_id)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def plan_identifiers(settings: Settings, catalogue_id: str, skus: list[str]) -> dict[str, str]:
    output = settings.store("output")
    published = {s: m.identifier for s in skus if (m := manifest.read_published(output, catalogue_id, s))}
    tokenizer = None if set(published) >= set(skus) else load_tokenizer(settings.base_model)
    return identifiers.assign_identifiers(skus, published, tokenizer)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def publish_report(
    settings: Settings, catalogue_id: str, outcomes: list[SkuOutcome], seconds: float | None = None
) -> str:
    return publish.publish_catalogue_report(settings.store("output"), catalogue_id, outcomes, seconds)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def due_catalogues(settings: Settings) -> dict[str, str]:
    return catalogue_changes.due_catalogues(settings.store("incoming"), settings.store("output"))


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def catalogue_fingerprint(settings: Settings, catalogue_id: str) -> str:
    return catalogue_changes.catalogue_fingerprint(settings.store("incoming"), catalogue_id)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def mark_scanned(settings: Settings, catalogue_id: str, fingerprint: str) -> None:
    catalogue_changes.mark_scanned(settings.store("output"), catalogue_id, fingerprint)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def publish_catalogue_index(settings: Settings, catalogue_id: str) -> str:
    return publish.publish_catalogue_index(settings.store("output"), catalogue_id)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def due_approvals(settings: Settings, catalogue_id: str | None) -> dict[tuple[str, str], str]:
    return approvals.due_skus(settings.store("output"), catalogue_id)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def publish_approved(settings: Settings, catalogue_id: str, sku: str) -> approvals.SkuApproval:
    output, marketplace = settings.store("output"), settings.store("marketplace")
    owner = f"publish-approved@{settings.worker()}"
    return approvals.publish_approved_sku(output, marketplace, catalogue_id, sku, owner=owner)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def retry_given_up(
    settings: Settings, catalogue_id: str, sku: str, cards: list[str]
) -> retry_failures.RetryFailure | None:
    return retry_failures.given_up(settings.store("output"), catalogue_id, sku, cards)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def mark_approvals_done(settings: Settings, catalogue_id: str, sku: str, marker: str) -> None:
    approvals.mark_done(settings.store("output"), catalogue_id, sku, marker)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def has_report(settings: Settings, catalogue_id: str) -> bool:
    return publish.has_catalogue_report(settings.store("output"), catalogue_id)


def take_skus(settings: Settings, catalogue_id: str, run: str, skus: list[str]):
    """The SKUs a batch run takes, one at a time (``batches.take_all``; not a task: a generator that
    lives as long as the batch run)."""
    output, owner = settings.store("output"), settings.worker()
    return batches.take_all(
        output, catalogue_id, run, skus, owner, settings.lease_seconds, wait=settings.batch_wait_seconds
    )


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def finish_sku(
    settings: Settings, catalogue_id: str, run: str, taken: batches.Taken, outcome: SkuOutcome
) -> None:
    batches.finish(settings.store("output"), catalogue_id, run, taken, outcome)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def batch_outcome(settings: Settings, catalogue_id: str, run: str, sku: str) -> SkuOutcome | None:
    return batches.finished(settings.store("output"), catalogue_id, run, sku)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def clear_batches(settings: Settings, catalogue_id: str, run: str) -> None:
    batches.clear(settings.store("output"), catalogue_id, run)
