"""Prefect tasks: each wraps one library call, adding retries where a retry can help.

Tasks pass paths, keys and small records -- never images or tensors. The base pipeline is loaded once per
worker process (``product_studio.models.load_pipeline`` caches it) and shared by every SKU it handles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import events
from flows.progress import TrainingProgress
from product_studio import cleaning, identifiers, images, ingest, leases, publish
from product_studio.cards import making, planning
from product_studio.cards.scoring import Gate
from product_studio.identifiers import ProductPrompts
from product_studio.loaded_models import RunModels, load_run_models
from product_studio.manifest import Manifest
from product_studio.manifest import read_published as read_published_manifest
from product_studio.marketplace import rerender
from product_studio.models import load_pipeline, load_tokenizer
from product_studio.provenance.labelling import Labelling
from product_studio.records import CardOrigin, CardRecord, CleanedPhoto, PhotoProblem, PhotoRecord, SkuOutcome
from product_studio.reruns import earlier_runs
from product_studio.review.decisions import usable_decisions
from product_studio.settings import Settings
from product_studio.storage import is_transient
from product_studio.text import printable
from product_studio.training import Checkpoints, TrainResult, priors, train_product, worth_retrying

T = TypeVar("T")
_LONG = {"clean": "cleaning photos", "priors": "class images", "train": "training", "cards": "rendering"}


class Stages:
    """Runs an SKU's stages: times each (for the manifest; ``timings`` may start with the model load),
    renews the lease between them, logs the long ones."""

    def __init__(
        self, lease: leases.Lease, timings: dict[str, float] | None = None, started: float | None = None
    ) -> None:
        self.timings: dict[str, float] = dict(timings or {})
        self.lease = lease
        self.started = time.perf_counter() if started is None else started  # the run's start
        self.preview_published = False  # a failure after it leaves the preview live, saying so

    def since_start(self) -> float:
        """Seconds since the run started."""
        return round(time.perf_counter() - self.started, 3)

    def run(self, stage: str, fn: Callable[..., T], *args: Any) -> T:
        self.lease.renew_if_due()
        if stage in _LONG:
            get_run_logger().info("%s ...", _LONG[stage])
        start = time.perf_counter()
        result = fn(*args)
        self.timings[stage] = round(time.perf_counter() - start, 3)
        return result


def _retry_when(rule):
    def condition(task, task_run, state) -> bool:
        return rule(state.result(raise_on_failure=False))

    return condition


# botocore already retries each call (standard mode); these cover longer outages of the store.
IO_RETRIES = {
    "retries": 3,
    "retry_delay_seconds": [2, 10, 30],
    "retry_condition_fn": _retry_when(is_transient),
}
# A lost GPU or worker: retry, and the trainer resumes from its last checkpoint in the output bucket.
TRAIN_RETRIES = {"retries": 2, "retry_delay_seconds": 30, "retry_condition_fn": _retry_when(worth_retrying)}


@contextmanager
def holding_sku(
    settings: Settings, catalogue_id: str, sku: str, owner: str, token: str = ""
) -> Iterator[leases.Lease | str]:
    """The frame of every run of an SKU (the SKU flow, the retry flow): the SKU's lease for the block, or why
    another run holds it (the caller reports ``skipped``). Released after the block, unless ``token`` names
    a lease a batch run took for this run (it releases it once it has marked the SKU finished)."""
    output = settings.store("output")
    got = leases.sku_lease(
        output, catalogue_id, sku, owner, settings.lease_seconds, settings.lease_wait_seconds, token
    )
    if not isinstance(got, leases.Lease):
        yield leases.held_by(got)
        return
    try:
        yield got
    finally:
        if not token:
            got.release()


def run_models(settings: Settings) -> RunModels:
    """Every model of the worker's runs, loaded once per process (the preflight: a broken worker fails
    once, naming the variable, before any SKU reads or writes anything; then the stages reuse them)."""
    return load_run_models(settings.model_refs())


def pipeline(settings: Settings):
    return load_pipeline(settings.base_model, settings.resolved_device(), settings.resolved_dtype())


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def read_product_spec(settings: Settings, catalogue_id: str, sku: str) -> ingest.ProductSpec:
    return ingest.load_product_spec(settings.store("incoming"), catalogue_id, sku)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def download_photos(
    settings: Settings, catalogue_id: str, sku: str, dest: Path
) -> tuple[list[PhotoRecord], list[PhotoProblem]]:
    store = settings.store("incoming")
    limits = {
        "min_side": settings.min_photo_side,
        "max_bytes": settings.max_photo_bytes,
        "max_photos": settings.max_photos,
    }
    return ingest.load_sku_photos(store, catalogue_id, sku, dest, **limits)


@task(cache_policy=NO_CACHE)
def small_copies(photos: list[PhotoRecord], dest: Path) -> dict[str, Path]:
    # Keyed like the cutouts' ``source`` (the seller's file name), so a page pairs each original and cutout.
    return images.small_copies({p.file: p.local_path for p in photos if p.local_path}, dest)


@task(cache_policy=NO_CACHE)
def clean_photos(
    settings: Settings, photos: list[PhotoRecord], dest: Path
) -> tuple[list[CleanedPhoto], list[PhotoProblem]]:
    return cleaning.clean_photos(photos, cleaning.make_cleaner(settings.cleaner), dest)


@task(cache_policy=NO_CACHE)
def choose_prompts(settings: Settings, sku: str, class_noun: str, identifier: str | None) -> ProductPrompts:
    """The SKU's prompts; its identifier as the catalogue planned it, else chosen from the tokenizer."""
    if identifier is None:
        identifier = identifiers.choose_identifier(load_tokenizer(settings.base_model), sku)
    return ProductPrompts(identifier, class_noun)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def read_published(settings: Settings, catalogue_id: str, sku: str) -> Manifest | None:
    return read_published_manifest(settings.store("output"), catalogue_id, sku)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def keep_tries(settings: Settings, plan: planning.CardPlan, published: Manifest | None) -> planning.CardPlan:
    if published is None:
        return plan
    decisions, problem = usable_decisions(settings.store("output"), published)
    if problem:  # the seller's to fix (publish-approved tells them): not this run's failure
        get_run_logger().warning("SKU %s: decisions not used: %s", published.sku, printable(problem, 2000))
    return rerender.keep_tries(plan, published, decisions)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def reuse_cutouts(
    settings: Settings, published: Manifest | None, photos: list[PhotoRecord], dest: Path
) -> list[CleanedPhoto] | None:
    return earlier_runs.reuse_cutouts(settings.store("output"), published, photos, settings.cleaner, dest)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def published_cutouts(settings: Settings, published: Manifest, dest: Path) -> list[CleanedPhoto]:
    return earlier_runs.published_cutouts(settings.store("output"), published, dest)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def reuse_training(
    settings: Settings, published: Manifest | None, key: str, dest: Path
) -> TrainResult | None:
    return earlier_runs.reuse_training(settings.store("output"), published, key, dest)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def class_images(settings: Settings, prompts: ProductPrompts, dest: Path) -> list[Path]:
    cache = settings.store("output")
    return priors.class_images_for(
        pipeline(settings),
        settings.base_model,
        prompts,
        settings.train,
        cache,
        dest,
        steps=settings.render.prior_steps,
        owner=settings.worker(),
        lease_seconds=settings.lease_seconds,
    )


@task(cache_policy=NO_CACHE, **TRAIN_RETRIES)
def train(
    settings: Settings,
    catalogue_id: str,
    sku: str,
    cutouts: list[CleanedPhoto],
    class_paths: list[Path],
    prompts: ProductPrompts,
    dest: Path,
) -> TrainResult:
    return train_product(
        pipeline(settings),
        [c.cutout_path for c in cutouts],
        prompts,
        settings.train,
        dest,
        base_model=settings.base_model,
        class_images=class_paths,
        checkpoints=Checkpoints.for_sku(settings.store("output"), catalogue_id, sku),
        progress=TrainingProgress(settings.train.steps, get_run_logger(), f"{catalogue_id}/{sku}"),
    )


def takes_reference_images(settings: Settings) -> bool:
    """Whether the worker's base model renders a product from reference images, with no LoRA (klein)."""
    from product_studio.families import family_for

    return family_for(pipeline(settings)).takes_reference_images


@task(cache_policy=NO_CACHE)
def make_cards(
    settings: Settings,
    plan: planning.CardPlan,
    prompts: ProductPrompts,
    lora_file: Path | None,
    cutouts: list[CleanedPhoto],
    dest: Path,
    origin: CardOrigin | None = None,
    earlier: list[CardRecord] | None = None,
) -> list[CardRecord]:
    """The SKU's cards with the worker's models (loaded by the preflight) and the run's render and score
    settings; ``origin`` (:func:`card_origin`) goes into every card's labels; ``earlier``: the preview's
    zero-shot candidates, competing again (``making.make_cards``)."""
    models, render, score = run_models(settings), settings.render, settings.scores
    return making.make_cards(
        plan,
        cutouts,
        dest,
        pipe=pipeline(settings),
        prompts=prompts,
        lora_file=lora_file,
        segment=models.cleaner.mask,
        inpainter=models.inpainter if any(t.mode == "composite" for t in plan.templates) else None,
        inpainter_name=render.inpaint_model or "base",
        upscaler=models.upscaler,
        judging=making.Judging(
            scorer=models.scorer,
            gate=Gate(score.min_identity, score.min_prompt),
            keep=score.keep,
            keep_rejected=score.keep_rejected,
        ),
        steps=render.steps,
        guidance_scale=render.guidance_scale,
        labelling=Labelling(origin=origin, signing=settings.c2pa.signing_key()),
        earlier=earlier,
    )


def card_origin(
    settings: Settings, catalogue_id: str, sku: str, photos: list[PhotoRecord], lora_file: Path | None
) -> CardOrigin:
    return making.card_origin(
        catalogue_id, sku, photos, lora_file, base_model=settings.base_model, cleaner=settings.cleaner
    )


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def publish_sku(
    settings: Settings, manifest: Manifest, files: dict[str, Path], uploaded: dict[str, str] | None = None
) -> str:
    url = publish.publish_sku(settings.store("output"), manifest, files, uploaded)
    if manifest.stage == "preview":  # its first cards wait for the seller while the LoRA trains
        events.review_preview(settings, manifest.catalogue_id, manifest.sku, manifest.coming)
    else:
        events.review_ready(settings, manifest.catalogue_id, manifest.sku)  # its cards wait for the seller
    return url


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def mark_rest_failed(settings: Settings, catalogue_id: str, sku: str, run: str, reason: str) -> bool:
    return publish.mark_rest_failed(settings.store("output"), catalogue_id, sku, run, reason)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def publish_sku_page(settings: Settings, manifest: Manifest) -> None:
    """The SKU's page again, as storage now says (e.g. after a failed retry)."""
    output = settings.store("output")
    publish.publish_sku_page(output, manifest, publish.decisions_in_force(output, manifest))


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def begin_run(settings: Settings, catalogue_id: str, sku: str) -> None:
    publish.begin_run(settings.store("output"), catalogue_id, sku)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def publish_error(settings: Settings, outcome: SkuOutcome) -> str:
    return publish.publish_failure(settings.store("output"), outcome)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def write_outcome(settings: Settings, outcome: SkuOutcome) -> None:
    publish.write_outcome(settings.store("output"), outcome)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def carried_files(
    settings: Settings, before: Manifest, after: Manifest, dropped: set[str], dest: Path
) -> dict[str, Path]:
    return rerender.carried_files(settings.store("output"), before, after, dropped, dest)


def report_failure(settings: Settings, failed: SkuOutcome) -> None:
    """``error.json`` for the seller and ``outcome.json`` for the catalogue run; a failure to write them is
    logged, never raised (the SKU's own failure matters more)."""
    try:
        publish_error(settings, failed)
        write_outcome(settings, failed)
    except Exception as exc:
        get_run_logger().error(
            "could not write error.json for %s/%s: %s", failed.catalogue_id, failed.sku, exc
        )
