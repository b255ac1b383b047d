"""Every bucket key, spelled once: the names below and the functions that join them are the storage contract.

Output location (``s3://<output>/``)::

    <catalogue>/
        catalogue-report.json                    CATALOGUE_REPORT  per-SKU outcomes of the last catalogue run
        catalogue-lease.json                     CATALOGUE_LEASE   while a catalogue run works on it
        review/index.html                        REVIEW_PAGE       the catalogue's review index
        review/shared/<token>.html               SHARED            presigned copy of the index (review links)
        <sku>/                                   sku_key(catalogue, sku, name)
            manifest.json                        MANIFEST          written last: the switch to a run
            error.json                           ERROR             why the latest run failed
            outcome.json                         OUTCOME           how the latest run ended
            lease.json                           SKU_LEASE         while a run works on the SKU
            review/index.html                    REVIEW_PAGE       the live run's page, for sellers
            review/contact-sheet.jpg             CONTACT_SHEET     the live run's cards side by side
            review/decisions.json                DECISIONS         written by the seller (many cards)
            review/decisions/<card>.json         card_decision()   one card's decision (the pages write these)
            review/decisions-error.json          DECISIONS_ERROR   why the seller's file could not be used
            review/retry-error.json              RETRY_ERROR       why cards sent back could not be made again
            review/live.json                     LIVE_NOW          what is live, since when
            review/status.json                   PAGE_STATUS       what shared pages read of the cards now
            review/shared/<token>.html           SHARED            presigned copy of the page (review links)
            runs/<run>/                          run_key(run, ...) one run's files (keys relative to the SKU)
                cards/<format>[--<template>[--<candidate>]].jpg      CARDS
                candidates/*.jpg                                     CANDIDATES (rejected, with keep_rejected)
                cutouts/*.png                                        CUTOUTS
                originals/*.jpg                                      ORIGINALS
                lora/*.safetensors                                   LORA
                training/loss.png, training.json, validation/*.png   TRAINING, TRAINING_SUMMARY, VALIDATION
                review/index.html, review/contact-sheet.jpg          REVIEW_PAGE, CONTACT_SHEET
                superseded.json                                      SUPERSEDED (when a later run replaced it)
    _priors/<prior key>/spec.json, 00000.png, ..., lease.json         prior_file(key, name), PRIOR_SPEC, LEASE
    _checkpoints/<catalogue>/<sku>/<run key>/                          checkpoints_prefix(catalogue, sku)
    _scans/<catalogue>/<fingerprint>                                   scan_marker(catalogue, fingerprint)
    _approvals/<catalogue>/<sku>/<marker>                              approval_marker(catalogue, sku, marker)
    _batches/<catalogue>/<catalogue run>/<sku>.json                    batch_done(catalogue, run, sku)

Incoming location (``s3://<incoming>/``, written by sellers, never by us)::

    <catalogue>/catalogue.json                   READY_MARKER      uploaded last: the catalogue is ready
    <catalogue>/<sku>/product.json               PRODUCT
    <catalogue>/<sku>/photos/*                   PHOTOS

Marketplace location (``s3://<marketplace>/``, approved cards only)::

    <catalogue>/<sku>/listing.json               LISTING
    <catalogue>/<sku>/<format>/<n>.<ext>         live_card(format, n, ext), relative to the SKU

Bookkeeping prefixes start with ``_``, which no catalogue id can (see ``ingest.check_id``).
"""

from __future__ import annotations

# Under an SKU (output location).
MANIFEST = "manifest.json"
ERROR = "error.json"
OUTCOME = "outcome.json"
SKU_LEASE = "lease.json"
REVIEW_PAGE = "review/index.html"  # also under a catalogue, and under a run
CONTACT_SHEET = "review/contact-sheet.jpg"  # also under a run
DECISIONS = "review/decisions.json"
DECISIONS_DIR = "review/decisions"  # one object per card: card_decision(name)
DECISIONS_ERROR = "review/decisions-error.json"
RETRY_ERROR = "review/retry-error.json"
LIVE_NOW = "review/live.json"
PAGE_STATUS = "review/status.json"
DECISIONS_MAX_BYTES = 1_000_000  # a decisions file of a few dozen cards is a few KB; larger: refused unread
SHARED = "review/shared"  # also under a catalogue
RUNS = "runs"

# Folders of a run (under ``runs/<run>/``).
CARDS = "cards"
CANDIDATES = "candidates"
CUTOUTS = "cutouts"
ORIGINALS = "originals"
SUPERSEDED = "superseded.json"  # in a run: written when a later run's manifest replaced it
LORA = "lora"
TRAINING = "training"
TRAINING_SUMMARY = "training.json"  # in TRAINING: the trainer's summary (losses)
VALIDATION = "validation"  # in TRAINING: the validation renders

# Under a catalogue (output location).
CATALOGUE_REPORT = "catalogue-report.json"
CATALOGUE_LEASE = "catalogue-lease.json"  # one catalogue run at a time

# Bookkeeping at the top of the output location.
PRIORS = "_priors"
PRIOR_SPEC = "spec.json"
LEASE = "lease.json"  # a class prior's lease, beside its images
CHECKPOINTS = "_checkpoints"
SCANS = "_scans"
APPROVALS = "_approvals"
BATCHES = "_batches"  # which SKUs a catalogue run's batch runs finished, and how

# Incoming location.
READY_MARKER = "catalogue.json"
PRODUCT = "product.json"
PHOTOS = "photos"

# Marketplace location.
LISTING = "listing.json"


def catalogue_key(catalogue_id: str, name: str) -> str:
    """``<catalogue>/<name>``: a catalogue's own file (its report, index, ready marker)."""
    return f"{catalogue_id}/{name}"


def sku_prefix(catalogue_id: str, sku: str) -> str:
    """``<catalogue>/<sku>``: where an SKU's files are, in every location."""
    return f"{catalogue_id}/{sku}"


def sku_key(catalogue_id: str, sku: str, name: str) -> str:
    """``<catalogue>/<sku>/<name>``: ``name`` is a key relative to the SKU (``MANIFEST``, a run's file)."""
    return f"{catalogue_id}/{sku}/{name}"


def photos_prefix(catalogue_id: str, sku: str) -> str:
    """``<catalogue>/<sku>/photos/``: where an SKU's photos are in the incoming location."""
    return f"{catalogue_id}/{sku}/{PHOTOS}/"


def in_catalogue(sku: str, name: str) -> str:
    """``<sku>/<name>``: an SKU's file relative to its catalogue (links on the catalogue's index)."""
    return f"{sku}/{name}"


def run_prefix(run: str) -> str:
    """``runs/<run>``: where a run's files are, relative to the SKU."""
    return f"{RUNS}/{run}"


def run_key(run: str, *parts: str) -> str:
    """``runs/<run>/<part>/...``: a run's file, relative to the SKU (``run_key(run, CUTOUTS, "a.png")``)."""
    return "/".join((RUNS, run, *parts))


def run_of(key: str) -> str | None:
    """The run a key relative to the SKU belongs to (``runs/<run>/...`` -> ``<run>``), else None."""
    parts = key.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == RUNS else None


def card_decision(card: str) -> str:
    """``review/decisions/<card>.json``: one card's decision, relative to the SKU (``card``: a file name)."""
    return f"{DECISIONS_DIR}/{card}.json"


def card_of_decision(key: str) -> str | None:
    """The card a per-card decision key names (relative to the SKU), else None."""
    head, _, name = key.rpartition("/")
    return name.removesuffix(".json") if head == DECISIONS_DIR and name.endswith(".json") else None


def shared_key(prefix: str, token: str) -> str:
    """``<prefix>/review/shared/<token>.html``: a presigned copy of the page under ``prefix``."""
    return f"{prefix}/{SHARED}/{token}.html"


def prior_prefix(key: str) -> str:
    """``_priors/<prior key>/``: a class-image set (``key``: ``priors.prior_key`` of its spec)."""
    return f"{PRIORS}/{key}/"


def prior_file(key: str, name: str) -> str:
    """``_priors/<prior key>/<name>``: a class-image set's file (an image, ``PRIOR_SPEC`` or ``LEASE``)."""
    return f"{PRIORS}/{key}/{name}"


def checkpoints_prefix(catalogue_id: str, sku: str) -> str:
    """``_checkpoints/<catalogue>/<sku>``: a training run's checkpoints, while it runs."""
    return f"{CHECKPOINTS}/{catalogue_id}/{sku}"


def scans_prefix(catalogue_id: str | None = None) -> str:
    """``_scans/`` or ``_scans/<catalogue>/``: the markers of catalogue runs."""
    return f"{SCANS}/{catalogue_id}/" if catalogue_id else f"{SCANS}/"


def scan_marker(catalogue_id: str, fingerprint: str) -> str:
    """``_scans/<catalogue>/<fingerprint>``: a run handled the catalogue as it was at ``fingerprint``."""
    return f"{SCANS}/{catalogue_id}/{fingerprint}"


def batch_prefix(catalogue_id: str, run: str) -> str:
    """``_batches/<catalogue>/<run>/``: the SKUs one catalogue run's batch runs finished."""
    return f"{BATCHES}/{catalogue_id}/{run}/"


def batch_done(catalogue_id: str, run: str, sku: str) -> str:
    """``_batches/<catalogue>/<run>/<sku>.json``: a batch run finished the SKU (its outcome)."""
    return f"{batch_prefix(catalogue_id, run)}{sku}.json"


def approvals_prefix(catalogue_id: str | None = None, sku: str | None = None) -> str:
    """``_approvals/``, ``_approvals/<catalogue>/`` or ``_approvals/<catalogue>/<sku>/``."""
    parts = [APPROVALS, *(p for p in (catalogue_id, sku) if p)]
    return "/".join(parts) + "/"


def approval_marker(catalogue_id: str, sku: str, marker: str) -> str:
    """``_approvals/<catalogue>/<sku>/<marker>``: publish-approved handled these decisions and manifest."""
    return f"{APPROVALS}/{catalogue_id}/{sku}/{marker}"


def live_card(card_format: str, number: int, ext: str) -> str:
    """``<format>/<n>.<ext>``: a live card in the marketplace location, relative to the SKU."""
    return f"{card_format}/{number}{ext}"
