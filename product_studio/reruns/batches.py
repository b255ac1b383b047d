"""Batch runs: a worker takes a catalogue's SKUs one at a time, models loaded once, until none is left.

A catalogue run starts a few batch runs (one per GPU slot) instead of one run per SKU. Each takes the next
SKU that no batch run of the same catalogue run has finished and nobody holds: the SKU's lease
(:mod:`product_studio.leases`) decides between batch runs, so of two that reach for one SKU exactly one gets
it, on any machine. A finished SKU gets a marker holding its outcome (``layout.batch_done``), written
*before* its lease is released, so no batch run takes it again. A batch run that crashes loses only the SKU
it held: no marker, and its lease expires, after which another batch run (or the catalogue's next run)
takes it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from product_studio import leases
from product_studio.layout import batch_done, batch_prefix
from product_studio.records import SkuOutcome
from product_studio.storage import ObjectNotFound, ObjectStore

DEFAULT_BATCH_RUNS = 4  # when the pool has no concurrency limit to go by


@dataclass(frozen=True)
class Taken:
    """An SKU a batch run took, with its lease (released by :func:`finish`)."""

    sku: str
    lease: leases.Lease


def take_next(
    output: ObjectStore, catalogue_id: str, run: str, skus: Sequence[str], owner: str, seconds: int
) -> Taken | list[str]:
    """The first of ``skus`` that this catalogue run has not finished and nobody holds, under its lease; or
    the SKUs other runs still hold (empty: every SKU is finished)."""
    held = []
    for sku in skus:
        if output.exists(batch_done(catalogue_id, run, sku)):
            continue
        got = leases.sku_lease(output, catalogue_id, sku, owner, seconds, wait=0)
        if not isinstance(got, leases.Lease):
            held.append(sku)
            continue
        if output.exists(batch_done(catalogue_id, run, sku)):  # finished between our look and our lease
            got.release()
            continue
        return Taken(sku, got)
    return held


def finish(output: ObjectStore, catalogue_id: str, run: str, taken: Taken, outcome: SkuOutcome) -> None:
    """Mark the SKU finished for this catalogue run (``outcome``), then release its lease if it is still
    this worker's (the SKU's own run may have released it already)."""
    body = outcome.model_dump_json(indent=2).encode()
    output.write(batch_done(catalogue_id, run, taken.sku), body, "application/json")
    lease = leases.adopt(output, taken.lease.key, taken.lease.token)
    if isinstance(lease, leases.Lease):
        lease.release()


def take_all(
    output: ObjectStore,
    catalogue_id: str,
    run: str,
    skus: Sequence[str],
    owner: str,
    seconds: int,
    *,
    wait: float = 0,
    poll: float = 2.0,
):
    """Every SKU this batch run takes, one at a time (a generator: the caller runs each, then
    :func:`finish`\\ es it). With nothing free, it waits up to ``wait`` seconds for SKUs other runs hold: a
    crashed run's lease expires and its SKU is taken here."""
    deadline = time.monotonic() + wait
    while True:
        got = take_next(output, catalogue_id, run, skus, owner, seconds)
        if isinstance(got, Taken):
            yield got
            deadline = time.monotonic() + wait
            continue
        if not got or time.monotonic() >= deadline:
            return
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


def finished(output: ObjectStore, catalogue_id: str, run: str, sku: str) -> SkuOutcome | None:
    """How a batch run of this catalogue run finished the SKU, or None (not finished: its run crashed)."""
    try:
        return SkuOutcome.model_validate_json(output.read(batch_done(catalogue_id, run, sku), 1_000_000))
    except (ObjectNotFound, ValueError):
        return None


def clear(output: ObjectStore, catalogue_id: str, run: str) -> None:
    """Remove the catalogue run's markers (its report holds the outcomes now)."""
    for key in output.list(batch_prefix(catalogue_id, run)):
        output.delete(key)


def batch_count(setting: int, pool_limit: int | None, skus: int) -> int:
    """How many batch runs a catalogue run starts: ``setting`` when set (> 0), else the pool's concurrency
    limit, else :data:`DEFAULT_BATCH_RUNS`; never more than there are SKUs, never fewer than one."""
    wanted = setting or pool_limit or DEFAULT_BATCH_RUNS
    return max(1, min(wanted, skus))
