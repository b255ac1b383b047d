"""The SKU flow: spec -> photos -> cutouts -> identifier -> priors -> LoRA -> cards -> publish.

Every rule lives in the library; each stage here is one task (``flows.tasks``) and its timing. The run holds
the SKU's lease (one run per SKU at a time), skips an SKU whose content key is unchanged, reuses unchanged
stage results, and leaves ``outcome.json`` (unless another run holds the SKU: that one writes it).
"""

from __future__ import annotations

import shutil
import time
from functools import partial
from pathlib import Path

from prefect import flow, get_run_logger, runtime

from flows import sku_cards, tasks
from product_studio import cleaning, publish
from product_studio.cards import planning
from product_studio.ingest import IngestError, ProductSpec, check_id
from product_studio.layout import PRODUCT, sku_key
from product_studio.loaded_models import take_load_seconds
from product_studio.manifest import Manifest, build_manifest, new_run_id
from product_studio.records import (
    CleanedPhoto,
    PhotoProblem,
    PhotoRecord,
    SkuOutcome,
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
    made, training = sku_cards.make_and_publish(
        stages, settings, catalogue_id, sku, plan, prompts, photos, cutouts, trained, work, describe
    )
    published_cards = sum(c.status == "published" for c in made)
    spent = sum(stages.timings.get(stage, 0.0) for stage in ("priors", "train"))
    return SkuOutcome.published(
        catalogue_id, sku, **links, cards=published_cards, identifier=prompts.identifier, problems=problems,
        content_key=key, training=training, training_s=round(spent, 2) if spent else None,
    )  # fmt: skip


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
