"""Leases in the object store: at most one run works on an SKU (or generates a class prior) at a time.

A lease is a small JSON object written with a conditional put (``If-None-Match: *``), so of two workers
that try at once exactly one gets it, whatever process or machine they run on. It names its owner and
expires: a crashed worker's lease stops counting after ``seconds``, and the next run takes it over. A
long-running holder renews it between stages. Taking over an expired lease deletes it and tries the
conditional put again, then reads it back: a worker that lost the race sees the winner's token and backs off.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from product_studio.storage import ObjectNotFound, ObjectStore

SKU_LEASE = "lease.json"


@dataclass
class Lease:
    """A held lease; ``renew`` pushes its expiry, ``release`` ends it (only if it is still ours)."""

    store: ObjectStore
    key: str
    owner: str
    token: str
    seconds: int
    expires: str

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "token": self.token, "expires": self.expires}).encode()

    def still_ours(self) -> bool:
        held = read_lease(self.store, self.key)
        return held is not None and held.get("token") == self.token

    def renew_if_due(self) -> None:
        """:meth:`renew` once a quarter of the lease has passed since it was taken or renewed (cheap to call
        often: between every two stages)."""
        left = datetime.fromisoformat(self.expires) - datetime.now(UTC)
        if left < timedelta(seconds=0.75 * self.seconds):
            self.renew()

    def renew(self) -> None:
        """Extend the lease by ``seconds`` from now (a plain put: only the holder writes its key)."""
        if not self.still_ours():
            raise LeaseLost(f"lease {self.key} was taken over by another run; stop working on it")
        self.expires = _expiry(self.seconds)
        self.store.write(self.key, self._body(), "application/json")

    def release(self) -> None:
        if self.still_ours():
            self.store.delete(self.key)


class LeaseLost(RuntimeError):
    """Another run took over a lease this run held (it had expired)."""


def _expiry(seconds: int) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="seconds")


def read_lease(store: ObjectStore, key: str) -> dict | None:
    """The lease object at ``key`` (owner, token, expires), or None when nobody holds it."""
    try:
        return json.loads(store.read(key, max_bytes=10_000))
    except ObjectNotFound:
        return None
    except ValueError:
        return {"owner": "?", "token": "", "expires": ""}  # unreadable: treat as expired


def _expired(held: dict) -> bool:
    try:
        return datetime.fromisoformat(held["expires"]) <= datetime.now(UTC)
    except (KeyError, TypeError, ValueError):
        return True


def try_acquire(store: ObjectStore, key: str, owner: str, seconds: int) -> Lease | dict:
    """The lease, or (when someone else holds a live one) what they hold: ``{"owner", "expires", ...}``."""
    lease = Lease(store, key, owner, secrets.token_hex(8), seconds, _expiry(seconds))
    for _ in range(3):
        if store.write(key, lease._body(), "application/json", if_absent=True):
            # Read back: a rival that took over "our" key as expired in the same instant wins; we back off.
            return lease if lease.still_ours() else (read_lease(store, key) or {"owner": "?", "expires": ""})
        held = read_lease(store, key)
        if held is None:
            continue  # released between our put and our read
        if not _expired(held):
            return held
        if read_lease(store, key) == held:  # still the expired one: take it over (the put decides who)
            store.delete(key)
    held = read_lease(store, key)
    return held if held is not None else {"owner": "?", "expires": ""}


def acquire(
    store: ObjectStore, key: str, owner: str, seconds: int, *, wait: float = 0, poll: float = 2.0
) -> Lease | dict:
    """:func:`try_acquire`, trying again every ``poll`` seconds for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        got = try_acquire(store, key, owner, seconds)
        if isinstance(got, Lease) or time.monotonic() >= deadline:
            return got
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


def sku_lease(
    output: ObjectStore, catalogue_id: str, sku: str, owner: str, seconds: int, wait: float
) -> Lease | dict:
    """The SKU's lease, ``<catalogue>/<sku>/lease.json`` in the output location (see :func:`acquire`)."""
    return acquire(output, f"{catalogue_id}/{sku}/{SKU_LEASE}", owner, seconds, wait=wait)


def held_by(held: dict) -> str:
    """Why a run could not take a lease, for its outcome."""
    return f"another run ({held.get('owner')}) holds the SKU's lease until {held.get('expires')}"
