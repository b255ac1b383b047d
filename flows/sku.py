"""The SKU flow: spec -> photos -> cutouts -> identifier -> priors -> LoRA -> cards -> publish.

Every rule lives in the library; each stage here is one task (``flows.tasks``) and its timing. The run holds
the SKU's lease (one run per SKU at a time), skips an SKU whose content key is unchanged, reuses unchanged
stage results, and leaves ``outcome.json`` (unless another run holds the SKU: that one writes it).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from prefect import flow, get_run_logger, runtime

from flows import tasks
from product_studio import cleaning, publish
from product_studio.cards import planning
from product_studio.cards.training_need import training_needed
from product_studio.identifiers import ProductPrompts
from product_studio.ingest import IngestError, ProductSpec, check_id
from product_studio.layout import PRODUCT, sku_key
from product_studio.loaded_models import take_load_seconds
from product_studio.manifest import Manifest, build_manifest, new_run_id
from product_studio.records import (
    CardOrigin,
    CardRecord,
    CleanedPhoto,
    PhotoProblem,
    PhotoRecord,
    SkuOutcome,
    TrainResult,
)
from product_studio.reruns import earlier_runs
from product_studio.reruns.content_key import sku_keys
from product_studio.settings import Settings
from product_studio.text import printable


@flow(name="product-sku", flow_run_name="{catalogue_id}/{sku}")
def sku_flow(
    catalogue_id: str, sku: str, identifier: str | None = None, force: bool = False, lease_token: str = ""
) -> SkuOutcome:
    """One SKU, start to finish: ``published``, ``skipped`` (unchanged, or another run holds it) or a
    failure, published as ``error.json`` for the seller and raised. ``force`` makes an unchanged SKU again;
    ``lease_token``: the SKU's lease, already taken by the batch run this runs in (which releases it).

    Bad ids and a broken worker configuration fail here, before anything is read or written.
    """
    started = time.perf_counter()
    settings = Settings()
    check_id("catalogue", catalogue_id)
    check_id("SKU", sku)
    tasks.run_models(settings)  # loads nothing when an earlier SKU of this worker loaded the models
    loaded = take_load_seconds()
    stamp = {"worker": settings.worker(), "flow_run": runtime.flow_run.id, "model_load_s": loaded}
    with tasks.holding_sku(settings, catalogue_id, sku, stamp["worker"], lease_token) as lease:
        if isinstance(lease, str):  # another run holds the SKU: its outcome.json is that run's to write
            get_run_logger().warning("SKU %s/%s: skipped, %s", catalogue_id, sku, lease)
            return SkuOutcome.skipped(catalogue_id, sku, lease, again=True, **stamp)
        run = new_run_id()
        work = settings.run_work_dir(catalogue_id, sku, run)
        stages = tasks.Stages(lease, {"model_load_s": stamp["model_load_s"]}, started=started)
        try:
            outcome = _sku_stages(settings, catalogue_id, sku, run, work, identifier, force, stages)
        except Exception as exc:
            failed = SkuOutcome.failed(catalogue_id, sku, exc).model_copy(update=stamp)
            tasks.report_failure(settings, failed)
            if stages.preview_published:  # the preview stays live; its page says the rest failed
                tasks.mark_rest_failed(settings, catalogue_id, sku, run, failed.reason or str(exc))
            raise
    shutil.rmtree(work, ignore_errors=True)  # a failed run's folder stays, for a look at what went wrong
    outcome = outcome.model_copy(update={**stamp, "seconds": round(time.perf_counter() - started, 2)})
    tasks.write_outcome(settings, outcome)
    return outcome


def _sku_stages(
    settings: Settings,
    catalogue_id: str,
    sku: str,
    run: str,
    work: Path,
    identifier: str | None,
    force: bool,
    stages: tasks.Stages,
) -> SkuOutcome:
    log = get_run_logger()

    published = stages.run("read_published", tasks.read_published, settings, catalogue_id, sku)
    spec = stages.run("ingest_spec", tasks.read_product_spec, settings, catalogue_id, sku)
    plan = _planned(settings, catalogue_id, sku, spec)
    settings = settings.for_product(spec.training_preset)  # the training config, final
    photos, problems = stages.run(
        "ingest_photos", tasks.download_photos, settings, catalogue_id, sku, work / "photos"
    )
    identifier = identifier or (published.identifier if published else None)
    prompts = stages.run("identify", tasks.choose_prompts, settings, sku, spec.class_noun, identifier)
    key, tkey = sku_keys(spec, photos, settings, plan, prompts.identifier)
    links = publish.sku_links(settings.store("output"), catalogue_id, sku)
    reason = earlier_runs.unchanged(published, key, force)
    tasks.begin_run(settings, catalogue_id, sku)  # an old error.json is not current either way
    if reason:
        log.info("SKU %s: skipped, %s", sku, printable(reason, 2000))
        return SkuOutcome.skipped(catalogue_id, sku, reason, **links, content_key=key, identifier=identifier)
    plan = stages.run("keep_tries", tasks.keep_tries, settings, plan, published)  # seeds the seller sent back
    cutouts, problems = _cutouts(stages, settings, sku, published, photos, problems, work)
    plan = planning.plan_for_cutouts(plan, cutouts)  # no cutout fit for composites: they are generated
    describe = partial(
        build_manifest,
        catalogue_id=catalogue_id, sku=sku, run=run, spec=spec, base_model=settings.base_model,
        cleaner=settings.cleaner, train=settings.train, scores=settings.scores, prompts=prompts,
        pixel_models={role: model for role, (_, model) in settings.pixel_models().items()},
        photos=photos, problems=problems, cutouts=cutouts, content_key=key, training_key=tkey,
        originals=tasks.small_copies(photos, work / "originals"),
    )  # fmt: skip
    trained = stages.run("reuse_training", tasks.reuse_training, settings, published, tkey, work / "lora")
    made, training = _cards(
        stages, settings, catalogue_id, sku, plan, prompts, photos, cutouts, trained, work, describe
    )
    published_cards = sum(c.status == "published" for c in made)
    spent = sum(stages.timings.get(stage, 0.0) for stage in ("priors", "train"))
    return SkuOutcome.published(
        catalogue_id, sku, **links, cards=published_cards, identifier=prompts.identifier, problems=problems,
        content_key=key, training=training, training_s=round(spent, 2) if spent else None,
    )  # fmt: skip


def _cards(
    stages: tasks.Stages,
    settings: Settings,
    catalogue_id: str,
    sku: str,
    plan: planning.CardPlan,
    prompts: ProductPrompts,
    photos: list[PhotoRecord],
    cutouts: list[CleanedPhoto],
    trained: TrainResult | None,
    work: Path,
    describe: Callable[..., tuple[Manifest, dict[str, Path]]],
) -> tuple[list[CardRecord], str]:
    """The preview (while training is the wait), the LoRA when needed (``trained``: the published one,
    reused), the rest of the cards, the final manifest published; the cards and what training did."""
    early, uploaded = None, None
    zero_shot = tasks.takes_reference_images(settings)  # klein: generate scenes from the cutouts alone
    if trained is None and settings.preview and plan.preview(zero_shot).formats:
        before = tasks.card_origin(settings, catalogue_id, sku, photos, None)  # no LoRA in its labels
        first = plan.preview(zero_shot)
        early, uploaded = _preview(
            stages, settings, sku, plan, first, prompts, cutouts, work, describe, before
        )
    need, why = training_needed(settings.train.when, plan, early, zero_shot)
    training = "reused" if trained is not None else "trained" if need else "not needed"
    if trained is not None:
        why = "the LoRA of the published run is reused: its photos and training settings are unchanged"
    elif need:
        trained = _trained(stages, settings, catalogue_id, sku, cutouts, prompts, work)
    made = early or []  # nothing needs the LoRA without one: the preview's cards are the SKU's
    if trained is not None:
        origin = tasks.card_origin(settings, catalogue_id, sku, photos, trained.lora_file)
        rest = plan.after_training() if early is not None else plan
        rivals = [c for c in made if c.render.conditioning == ["reference"]]  # zero-shot: they compete again
        lora, cards = trained.lora_file, work / "cards"
        made = [c for c in made if c not in rivals] + stages.run(
            "cards", tasks.make_cards, settings, rest, prompts, lora, cutouts, cards, origin, rivals
        )
    else:
        get_run_logger().info("SKU %s: not trained: %s", sku, why)
    manifest, files = describe(
        trained=trained, cards=made, timings=stages.timings, stage="final", training_decision=why
    )
    url = stages.run("publish", tasks.publish_sku, settings, manifest, files, uploaded)
    get_run_logger().info("SKU %s published: %s", sku, url)
    return made, training


def _planned(settings: Settings, catalogue_id: str, sku: str, spec: ProductSpec) -> planning.CardPlan:
    """The SKU's card plan; unknown scene or format ids are the seller's to fix: said before any GPU time."""
    try:
        return planning.plan_for(spec, settings.plan_defaults())
    except ValueError as exc:
        spec_url = settings.store("incoming").url(sku_key(catalogue_id, sku, PRODUCT))
        raise IngestError(f"SKU {sku!r}: {spec_url}: {exc}") from None


def _cutouts(
    stages: tasks.Stages,
    settings: Settings,
    sku: str,
    published: Manifest | None,
    photos: list[PhotoRecord],
    problems: list[PhotoProblem],
    work: Path,
) -> tuple[list[CleanedPhoto], list[PhotoProblem]]:
    """The cutouts (the published run's when its photos are unchanged) and every photo's problem; enough
    usable photos, or an error that says what to upload."""
    uploaded = len(photos) + len(problems)
    cutouts = stages.run("reuse_cutouts", tasks.reuse_cutouts, settings, published, photos, work / "cutouts")
    if cutouts is None:
        cutouts, unclean = stages.run("clean", tasks.clean_photos, settings, photos, work / "cutouts")
        problems = problems + unclean
    for problem in problems:
        get_run_logger().warning("SKU %s: photo not used: %s", sku, printable(problem.reason, 2000))
    cleaning.require_usable_photos(sku, cutouts, problems, uploaded=uploaded, minimum=settings.min_photos)
    return cutouts, problems


def _preview(
    stages: tasks.Stages,
    settings: Settings,
    sku: str,
    plan: planning.CardPlan,
    first: planning.CardPlan,
    prompts: ProductPrompts,
    cutouts: list[CleanedPhoto],
    work: Path,
    describe: Callable[..., tuple[Manifest, dict[str, Path]]],
    origin: CardOrigin,
) -> tuple[list[CardRecord], dict[str, str]]:
    """The cards that need no LoRA (``first``), published as the SKU's preview (``"stage": "preview"``)
    before training; they and the files written (key -> sha256, not written again by the final publish)."""
    made = stages.run(
        "preview_cards", tasks.make_cards, settings, first, prompts, None, cutouts, work / "cards", origin
    )
    stages.timings["preview"] = stages.since_start()  # the seller's wait for the first cards
    coming = plan.after_training().card_names()
    manifest, files = describe(trained=None, cards=made, timings=dict(stages.timings), coming=coming)
    url = stages.run("publish_preview", tasks.publish_sku, settings, manifest, files)
    stages.preview_published = True
    get_run_logger().info("SKU %s preview published: %s (%d cards to come)", sku, url, len(coming))
    return made, {key: hashlib.sha256(path.read_bytes()).hexdigest() for key, path in files.items()}


def _trained(
    stages: tasks.Stages,
    settings: Settings,
    catalogue_id: str,
    sku: str,
    cutouts: list[CleanedPhoto],
    prompts: ProductPrompts,
    work: Path,
) -> TrainResult:
    """Class images, then the product's LoRA."""
    class_paths = stages.run("priors", tasks.class_images, settings, prompts, work / "priors")
    return stages.run(
        "train", tasks.train, settings, catalogue_id, sku, cutouts, class_paths, prompts, work / "lora"
    )
