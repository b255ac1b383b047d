"""Marketplace: what goes live, and only what the seller approved.

Owns publishing approved cards to the marketplace location under the SKU's lease (``approvals``), the
``listing.json`` kept in agreement with the live files in a write order safe against kill -9 (``listing``),
another try at a scene card a seller sent back (``rerender``) and the record of retries that failed
(``retry_failures``).

May import: everything of the library below it (manifest, review's decisions, publish, provenance labels,
the card plan). Only the flows and the dev kit sit above it.
"""
