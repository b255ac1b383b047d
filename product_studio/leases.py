"""Leases in the object store: at most one run works on an SKU (or generates a class prior) at a time.

A lease is a small JSON object written with a conditional put (``If-None-Match: *``), so of two workers
that try at once exactly one gets it, whatever process or machine they run on. It names its owner and
expires: a crashed worker's lease stops counting ``seconds`` after it was written or renewed, by the store's
own clock (the object's ``Last-Modified`` against the response's ``Date``: workers' clocks may disagree by
minutes), and the next run takes it over. Every later write is conditional on the object's tag
(``If-Match``): taking over deletes exactly the expired object that was read (a rival's fresh lease
survives), and a holder whose lease was taken over can neither renew nor release the new one -- its renewal
raises :class:`LeaseLost`.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from product_studio.layout import CATALOGUE_LEASE, SKU_LEASE, catalogue_key, sku_key
from product_studio.storage import ObjectNotFound, ObjectStore


@dataclass
class Lease:
    """A held lease; ``renew`` pushes its expiry, ``release`` ends it -- both only while it is still ours:
    every write after the first is conditional on the object's tag (``If-Match``), so a run whose lease was
    taken over can neither extend nor delete the new holder's."""

    store: ObjectStore
    key: str
    owner: str
    token: str
    seconds: int
    expires: str
    tag: str = ""
    lost: bool = False  # set by :func:`kept` when another run took the lease over

    def _body(self) -> bytes:
        # ``expires`` (by the holder's clock) is for people; ``seconds`` and the store's clock decide.
        body = {"owner": self.owner, "token": self.token, "expires": self.expires, "seconds": self.seconds}
        return json.dumps(body).encode()

    def renew_if_due(self) -> None:
        """:meth:`renew` once a quarter of the lease has passed since it was taken or renewed (cheap to call
        often: between every two stages)."""
        left = datetime.fromisoformat(self.expires) - datetime.now(UTC)
        if left < timedelta(seconds=0.75 * self.seconds):
            self.renew()

    def renew(self) -> None:
        """Extend the lease by ``seconds`` from now; :class:`LeaseLost` if another run took it over."""
        expires = self.expires
        self.expires = _expiry(self.seconds)
        tag = self.store.write_tagged(self.key, self._body(), "application/json", if_match=self.tag)
        if tag is None:
            self.expires = expires
            raise LeaseLost(f"lease {self.key} was taken over by another run; stop working on it")
        self.tag = tag

    def release(self) -> None:
        """Delete the lease if it is still ours (a taken-over lease is the new holder's to release)."""
        self.store.delete(self.key, if_match=self.tag)


class LeaseLost(RuntimeError):
    """Another run took over a lease this run held (it had expired)."""


def _expiry(seconds: int) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="seconds")


def read_lease(store: ObjectStore, key: str) -> dict | None:
    """The lease object at ``key`` (owner, token, expires), or None when nobody holds it."""
    held = _read(store, key)
    return held[0] if held else None


def _read(store: ObjectStore, key: str) -> tuple[dict, str] | None:
    """The lease object, with ``expired`` (whether it stops counting, :func:`_expired`), and its tag."""
    try:
        data, tag, age = store.read_aged(key, max_bytes=10_000)
    except ObjectNotFound:
        return None
    try:
        held = json.loads(data)
        if not isinstance(held, dict):
            raise ValueError(held)
    except ValueError:
        held = {"owner": "?", "token": "", "expires": ""}  # unreadable: treated as expired
    return {**held, "expired": _expired(held, age)}, tag


def _expired(held: dict, age: float | None) -> bool:
    """Past its ``seconds`` by the store's clock; a lease without them (or a store without a clock) by its
    ``expires`` against this machine's clock."""
    seconds = held.get("seconds")
    if age is not None and isinstance(seconds, int | float) and not isinstance(seconds, bool):
        return age >= seconds
    try:
        return datetime.fromisoformat(held["expires"]) <= datetime.now(UTC)
    except (KeyError, TypeError, ValueError):
        return True


def try_acquire(store: ObjectStore, key: str, owner: str, seconds: int) -> Lease | dict:
    """The lease, or (when someone else holds a live one) what they hold: ``{"owner", "expires", ...}``."""
    lease = Lease(store, key, owner, secrets.token_hex(8), seconds, _expiry(seconds))
    for _ in range(3):
        tag = store.write_tagged(key, lease._body(), "application/json", if_absent=True)
        if tag is not None:
            lease.tag = tag
            return lease
        found = _read(store, key)
        if found is None:
            continue  # released between our put and our read
        held, held_tag = found
        if not held["expired"]:
            return held
        # A crashed holder's lease: delete exactly that object (a rival's fresh lease survives), then race
        # for the key with the conditional put.
        store.delete(key, if_match=held_tag)
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


def adopt(store: ObjectStore, key: str, token: str) -> Lease | dict:
    """The live lease at ``key`` whose token is ``token`` (taken by another part of this worker: a batch run
    hands its SKU's lease to the SKU's run), or what is there instead (``{}`` when nothing is)."""
    found = _read(store, key)
    if found is None:
        return {"owner": "?", "expires": ""}
    held, tag = found
    if held.get("token") != token or held["expired"]:
        return held
    seconds = held.get("seconds")
    seconds = seconds if isinstance(seconds, int) and not isinstance(seconds, bool) else 3600
    return Lease(store, key, str(held.get("owner")), token, seconds, str(held.get("expires")), tag)


def sku_lease(
    output: ObjectStore,
    catalogue_id: str,
    sku: str,
    owner: str,
    seconds: int,
    wait: float,
    token: str | None = None,
) -> Lease | dict:
    """The SKU's lease, ``<catalogue>/<sku>/lease.json`` in the output location (see :func:`acquire`);
    with ``token``, the one already taken under it (:func:`adopt`)."""
    key = sku_key(catalogue_id, sku, SKU_LEASE)
    return adopt(output, key, token) if token else acquire(output, key, owner, seconds, wait=wait)


def catalogue_lease(output: ObjectStore, catalogue_id: str, owner: str, seconds: int) -> Lease | dict:
    """The catalogue's lease, ``<catalogue>/catalogue-lease.json`` (one catalogue run at a time), or what
    the run that holds it wrote (see :func:`try_acquire`)."""
    return try_acquire(output, catalogue_key(catalogue_id, CATALOGUE_LEASE), owner, seconds)


def catalogue_running(output: ObjectStore, catalogue_id: str) -> dict | None:
    """The live lease of a run working on the catalogue, or None."""
    found = _read(output, catalogue_key(catalogue_id, CATALOGUE_LEASE))
    return None if found is None or found[0]["expired"] else found[0]


@contextmanager
def kept(lease: Lease, every: float | None = None) -> Iterator[Lease]:
    """Renew ``lease`` from a background thread every ``every`` seconds (a quarter of the lease by default)
    while the block runs, for holders that cannot renew between steps (a catalogue run waits hours on its
    SKUs). A process that dies stops renewing, so its lease expires as any other. A lease taken over stops
    the renewals (``lease.lost`` is then true); the block is not interrupted."""
    stop = threading.Event()
    every = every if every is not None else max(1.0, lease.seconds / 4)

    def renew() -> None:
        while not stop.wait(every):
            try:
                lease.renew()
            except LeaseLost:
                lease.lost = True
                return
            except Exception:  # a store hiccup: the next tick tries again
                continue

    thread = threading.Thread(target=renew, name=f"renew {lease.key}", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join()


def held_by(held: dict, what: str = "the SKU's lease") -> str:
    """Why a run could not take a lease, for its outcome."""
    return f"another run ({held.get('owner')}) holds {what} until {held.get('expires')}"
