"""Prefect glue: one task per library call, retries on I/O, and the SKU flow that reads like the stages.

Tasks pass paths, keys and small records -- never images or tensors. The base pipeline is loaded once per
worker process (``product_studio.models.load_pipeline`` caches it) and shared by every SKU it handles.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PIL import Image
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from product_studio import (
    cards,
    cleaning,
    identifiers,
    ingest,
    priors,
    publish,
    quality,
    rendering,
    review,
    scenes,
)
from product_studio.models import load_pipeline, model_identity, native_resolution
from product_studio.records import CardRecord, CleanedPhoto, PhotoProblem, PhotoRecord, SkuOutcome
from product_studio.settings import Settings, TrainSettings
from product_studio.storage import ObjectNotFound, StorageError, Store
from product_studio.training import Checkpoints, TrainingError, TrainingImage, TrainResult, train_lora


def is_transient(exc: BaseException | None) -> bool:
    """Worth retrying: a storage outage, not bad input (a missing or invalid file stays so)."""
    return isinstance(exc, StorageError) and not isinstance(exc, ObjectNotFound)


def _retry_if_transient(task, task_run, state) -> bool:
    return is_transient(state.result(raise_on_failure=False))


# botocore already retries each call (standard mode); these cover longer outages of the store.
IO_RETRIES = {"retries": 3, "retry_delay_seconds": [2, 10, 30], "retry_condition_fn": _retry_if_transient}


def _retry_unless_bad_input(task, task_run, state) -> bool:
    """Retry a lost worker or a storage hiccup; not divergence, bad input or a GPU too small for the job."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, TrainingError | ValueError) and type(exc).__name__ != "OutOfMemoryError"


# A lost GPU or worker: retry, and the trainer resumes from its last checkpoint in the output bucket.
TRAIN_RETRIES = {"retries": 2, "retry_delay_seconds": 30, "retry_condition_fn": _retry_unless_bad_input}


class SkuFailed(RuntimeError):
    """An SKU cannot be published; carries the per-photo problems found on the way."""

    def __init__(self, message: str, problems: list[PhotoProblem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


def _pipe(settings: Settings):
    return load_pipeline(settings.base_model, settings.resolved_device(), settings.resolved_dtype())


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def read_product_spec(settings: Settings, catalogue_id: str, sku: str) -> ingest.ProductSpec:
    return ingest.load_product_spec(Store(settings.incoming), catalogue_id, sku)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def download_photos(settings: Settings, catalogue_id: str, sku: str, dest: Path):
    return ingest.load_sku_photos(
        Store(settings.incoming),
        catalogue_id,
        sku,
        dest,
        min_side=settings.min_photo_side,
        max_bytes=settings.max_photo_bytes,
    )


@task(cache_policy=NO_CACHE)
def clean_photos(settings: Settings, photos: list[PhotoRecord], dest: Path):
    cleaner = cleaning.make_cleaner(settings.cleaner)
    cleaned: list[CleanedPhoto] = []
    problems: list[PhotoProblem] = []
    for photo in photos:
        try:
            cleaned.append(cleaning.clean_photo(photo.local_path, cleaner, dest))
        except (cleaning.CleaningError, OSError) as exc:
            problems.append(
                PhotoProblem(file=photo.file, reason=str(exc).replace(photo.local_path.name, photo.file))
            )
    return cleaned, problems


@task(cache_policy=NO_CACHE)
def choose_identifier(settings: Settings, sku: str, taken: list[str]) -> str:
    return identifiers.choose_identifier(_pipe(settings).tokenizer, sku, set(taken))


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def class_images(settings: Settings, class_noun: str, dest: Path) -> list[Path]:
    if settings.train.prior_images == 0 or settings.train.prior_loss_weight == 0:
        return []
    pipe = _pipe(settings)
    spec = priors.prior_spec(
        pipe,
        model_identity(settings.base_model),
        identifiers.class_prompt(class_noun),
        resolution=settings.train.resolution or native_resolution(pipe),
        steps=settings.render.prior_steps,
    )
    return priors.ensure_class_images(Store(settings.output), pipe, spec, settings.train.prior_images, dest)


@task(cache_policy=NO_CACHE, **TRAIN_RETRIES)
def train(
    settings: Settings,
    cutouts: list[CleanedPhoto],
    class_paths: list[Path],
    identifier: str,
    class_noun: str,
    dest: Path,
    checkpoint_prefix: str,
) -> TrainResult:
    pipe = _pipe(settings)
    resolution = settings.train.resolution or native_resolution(pipe)
    instance = [TrainingImage(*cleaning.training_image(c.cutout_path, resolution)) for c in cutouts]
    classes = [Image.open(p).convert("RGB") for p in class_paths]
    return train_lora(
        pipe,
        instance,
        classes,
        instance_prompt=identifiers.instance_prompt(identifier, class_noun),
        class_prompt=identifiers.class_prompt(class_noun),
        config=settings.train,
        out_dir=dest,
        metadata={"identifier": identifier, "class_noun": class_noun, "base_model": settings.base_model},
        checkpoints=Checkpoints(Store(settings.output), checkpoint_prefix),
    )


@task(cache_policy=NO_CACHE)
def make_cards(
    settings: Settings,
    spec: ingest.ProductSpec,
    identifier: str,
    lora_file: Path,
    cutouts: list[CleanedPhoto],
    dest: Path,
) -> list[CardRecord]:
    presets = cards.select_presets(spec.marketplaces or settings.default_marketplaces)
    library = scenes.load_library(settings.templates_dir)
    templates = scenes.select_templates(library, spec.scenes or settings.default_scenes)
    dest.mkdir(parents=True, exist_ok=True)
    hero = Image.open(cutouts[0].cutout_path)
    made: list[CardRecord] = []

    def save(
        image: Image.Image, preset: cards.CardPreset, name: str, kind: str, extra: dict[str, Any]
    ) -> None:
        path = dest / f"{name}.{'jpg' if preset.format == 'JPEG' else 'png'}"
        image.save(path, format=preset.format, quality=92)
        made.append(
            CardRecord(
                file=f"cards/{path.name}",
                preset=preset.id,
                width=image.width,
                height=image.height,
                kind=kind,
                local_path=path,
                scores=quality.score_card(image, kind, hero),
                **extra,
            )
        )

    for preset in (p for p in presets if p.kind == "cutout"):
        save(cards.compose_cutout_card(preset, hero), preset, preset.id, "cutout", {})
    scene_presets = [p for p in presets if p.kind == "scene"]
    if scene_presets:
        pipe = _pipe(settings)
        with rendering.product_lora(pipe, lora_file):
            for template in templates:
                image, used = rendering.render_scene(
                    pipe,
                    template,
                    identifier=identifier,
                    class_noun=spec.class_noun,
                    resolution=native_resolution(pipe),
                    steps=settings.render.steps,
                    guidance_scale=settings.render.guidance_scale,
                )
                for preset in scene_presets:
                    save(
                        cards.compose_scene_card(preset, image),
                        preset,
                        f"{preset.id}--{template.id}",
                        "scene",
                        used,
                    )
    return made


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def publish_results(
    settings: Settings, catalogue_id: str, sku: str, files: dict[str, Path], manifest: dict[str, Any]
) -> str:
    return publish.publish_sku(Store(settings.output), catalogue_id, sku, files, manifest)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def publish_error(settings: Settings, outcome: SkuOutcome) -> str:
    return publish.publish_failure(Store(settings.output), outcome)


@flow(name="product-sku", flow_run_name="{catalogue_id}/{sku}")
def sku_flow(catalogue_id: str, sku: str, taken_identifiers: list[str] | None = None) -> SkuOutcome:
    """Ingest -> clean -> identify -> priors -> train -> render cards -> publish, for one SKU."""
    settings = Settings()
    log = get_run_logger()
    try:
        return _sku_stages(settings, catalogue_id, sku, taken_identifiers or [], log)
    except Exception as exc:
        problems = exc.problems if isinstance(exc, SkuFailed) else []
        outcome = SkuOutcome(
            catalogue_id=catalogue_id, sku=sku, status="failed", error=str(exc), problems=problems
        )
        try:
            publish_error(settings, outcome)
        except Exception as report_exc:  # the original failure matters more than the report's
            log.error("could not write error.json for %s/%s: %s", catalogue_id, sku, report_exc)
        raise


def _sku_stages(settings: Settings, catalogue_id: str, sku: str, taken: list[str], log) -> SkuOutcome:
    work = settings.work_dir / catalogue_id / sku
    timings: dict[str, float] = {}

    def timed(stage: str, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        timings[stage] = round(time.perf_counter() - start, 3)
        return result

    spec = timed("ingest_spec", read_product_spec, settings, catalogue_id, sku)
    # Unknown scene or preset ids are the seller's to fix: say so before spending GPU time on training.
    cards.select_presets(spec.marketplaces or settings.default_marketplaces)
    scenes.select_templates(
        scenes.load_library(settings.templates_dir), spec.scenes or settings.default_scenes
    )
    if spec.preset:  # the SKU's preset under any PRODUCT_STUDIO_TRAIN__* the operator set explicitly
        train_config = TrainSettings(
            **{**settings.train.model_dump(exclude_unset=True), "preset": spec.preset}
        )
        settings = settings.model_copy(update={"train": train_config})
    photos, problems = timed("ingest_photos", download_photos, settings, catalogue_id, sku, work / "photos")
    cutouts, clean_problems = timed("clean", clean_photos, settings, photos, work / "cutouts")
    uploaded = len(photos) + len(problems)
    problems = problems + clean_problems
    for p in problems:
        log.warning("SKU %s: photo not used: %s", sku, p.reason)
    if len(cutouts) < settings.min_photos:
        raise SkuFailed(
            f"SKU {sku!r}: only {len(cutouts)} usable photo(s) of {uploaded}; at least {settings.min_photos} "
            "are needed. Problems: " + ("; ".join(p.reason for p in problems) or "none"),
            problems,
        )
    identifier = timed("identify", choose_identifier, settings, sku, taken)
    class_paths = timed("priors", class_images, settings, spec.class_noun, work / "priors")
    trained = timed(
        "train",
        train,
        settings,
        cutouts,
        class_paths,
        identifier,
        spec.class_noun,
        work / "lora",
        f"_checkpoints/{catalogue_id}/{sku}",
    )
    made = timed("cards", make_cards, settings, spec, identifier, trained.lora_file, cutouts, work / "cards")

    files = {c.file: c.local_path for c in made}
    files |= {f"cutouts/{c.cutout_path.name}": c.cutout_path for c in cutouts}
    training_files = {
        ("lora/" if name.endswith(".safetensors") else "training/") + name: path
        for name, path in trained.files().items()
    }
    files |= training_files
    manifest = {
        "schema": "product-studio/manifest/v1",
        "catalogue_id": catalogue_id,
        "sku": sku,
        "title": spec.title,
        "class_noun": spec.class_noun,
        "identifier": identifier,
        "instance_prompt": identifiers.instance_prompt(identifier, spec.class_noun),
        "class_prompt": identifiers.class_prompt(spec.class_noun),
        "base_model": model_identity(settings.base_model),
        "cleaner": settings.cleaner,
        "created": publish.now(),
        "inputs": {
            "photos": [p.model_dump(mode="json", exclude={"local_path"}) for p in photos],
            "problems": [p.model_dump(mode="json") for p in problems],
        },
        "cutouts": [
            {"file": f"cutouts/{c.cutout_path.name}", "source": c.source, "coverage": c.coverage}
            for c in cutouts
        ],
        "lora": {
            "file": "lora/" + trained.lora_file.name,
            "rank": trained.rank,
            "alpha": trained.alpha,
            "steps": trained.steps,
            "resolution": trained.resolution,
            "final_loss": round(trained.final_loss, 5),
            "settings": settings.train.model_dump(mode="json"),
            "training": {
                "loss_curve": "training/loss.png",
                "validation": sorted(k for k in training_files if k.startswith("training/validation/")),
                "resumed_from_step": trained.resumed_from,
                "timings_s": trained.timings,
                "kohya_file": "lora/" + trained.kohya_file.name if trained.kohya_file else None,
            },
        },
        "cards": [c.model_dump(mode="json", exclude={"local_path"}) for c in made],
        "timings_s": timings,
        "versions": publish.versions(),
    }
    review_path = work / "review" / "index.html"
    review_path.parent.mkdir(parents=True, exist_ok=True)
    review_path.write_text(review.render_review_page(manifest), encoding="utf-8")
    files["review/index.html"] = review_path
    url = timed("publish", publish_results, settings, catalogue_id, sku, files, manifest)
    log.info("SKU %s published: %s", sku, url)
    return SkuOutcome(
        catalogue_id=catalogue_id,
        sku=sku,
        status="published",
        manifest=url,
        cards=len(made),
        identifier=identifier,
        problems=problems,
    )
