"""Which ready catalogues need a run: new ones, and those with any SKU added, changed or removed since.

Decided from two listings, whatever the number of catalogues: the incoming location (every object's ETag
and size) and ``_scans/`` in the output location. A catalogue's *fingerprint* hashes the listing of its
objects; a finished catalogue run leaves ``_scans/<catalogue>/<fingerprint>``, an empty object. A catalogue
is due when it is ready and its current fingerprint has no such marker. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from product_studio.ingest import is_valid_id
from product_studio.layout import READY_MARKER, catalogue_key, scan_marker, scans_prefix
from product_studio.storage import Store


def fingerprints(listing: dict[str, str]) -> dict[str, str]:
    """Catalogue id -> fingerprint of its objects (``listing``: key -> version tag, as ``Store.versions``)."""
    by_catalogue: dict[str, list[str]] = defaultdict(list)
    for key, version in sorted(listing.items()):
        catalogue = key.split("/", 1)[0]
        if "/" in key and is_valid_id(catalogue):
            by_catalogue[catalogue].append(f"{key}\t{version}")
    return {
        c: hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32] for c, lines in by_catalogue.items()
    }


def catalogue_fingerprint(incoming: Store, catalogue_id: str) -> str:
    """The fingerprint of one catalogue's objects now (one listing of its prefix)."""
    return fingerprints(incoming.versions(catalogue_key(catalogue_id, ""))).get(catalogue_id, "")


def due_catalogues(incoming: Store, output: Store) -> dict[str, str]:
    """Ready catalogues that are new or changed since their last run: id -> current fingerprint."""
    listing = incoming.versions()
    ready = {k.split("/")[0] for k in listing if k.count("/") == 1 and k.endswith(f"/{READY_MARKER}")}
    done = {tuple(k.split("/")[1:3]) for k in output.list(scans_prefix()) if k.count("/") == 2}
    return {c: fp for c, fp in sorted(fingerprints(listing).items()) if c in ready and (c, fp) not in done}


def mark_scanned(output: Store, catalogue_id: str, fingerprint: str) -> None:
    """Record that a run handled the catalogue as it was at ``fingerprint`` (earlier markers are removed)."""
    for key in output.list(scans_prefix(catalogue_id)):
        output.delete(key)
    output.write(scan_marker(catalogue_id, fingerprint), b"", "text/plain")
