"""The SKU flow: spec -> photos -> cutouts -> identifier -> priors -> LoRA -> cards -> publish.

Every rule lives in the library; each stage here is one task (``flows.tasks``) and its timing.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, get_run_logger

from flows import tasks
from product_studio import cards, cleaning
from product_studio.ingest import check_id
from product_studio.manifest import build_manifest, new_run_id
from product_studio.records import SkuOutcome
from product_studio.settings import Settings

T = TypeVar("T")


class _Stages:
    """Runs the stages, timing each (seconds, for the manifest)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def run(self, stage: str, fn: Callable[..., T], *args: Any) -> T:
        start = time.perf_counter()
        result = fn(*args)
        self.timings[stage] = round(time.perf_counter() - start, 3)
        return result


@flow(name="product-sku", flow_run_name="{catalogue_id}/{sku}")
def sku_flow(catalogue_id: str, sku: str, taken_identifiers: list[str] | None = None) -> SkuOutcome:
    """One SKU, start to finish; a failure is published as ``error.json`` for the seller, then raised.

    Bad ids and a broken worker configuration fail here, before anything is read or written.
    """
    settings = Settings()
    check_id("catalogue", catalogue_id)
    check_id("SKU", sku)
    settings.preflight()
    run = new_run_id()
    work = settings.run_work_dir(catalogue_id, sku, run)
    try:
        outcome = _sku_stages(settings, catalogue_id, sku, run, work, taken_identifiers or [])
    except Exception as exc:
        try:
            tasks.publish_error(settings, SkuOutcome.failed(catalogue_id, sku, exc))
        except Exception as report_exc:  # the original failure matters more than the report's
            get_run_logger().error("could not write error.json for %s/%s: %s", catalogue_id, sku, report_exc)
        raise
    shutil.rmtree(work, ignore_errors=True)  # a failed run's folder stays, for a look at what went wrong
    return outcome


def _sku_stages(
    settings: Settings, catalogue_id: str, sku: str, run: str, work: Path, taken: list[str]
) -> SkuOutcome:
    log = get_run_logger()
    stages = _Stages()

    tasks.begin_run(settings, catalogue_id, sku)
    spec = stages.run("ingest_spec", tasks.read_product_spec, settings, catalogue_id, sku)
    # Unknown scene or format ids are the seller's to fix: say so before spending GPU time on training.
    plan = cards.plan_cards(
        spec.marketplaces,
        spec.scenes,
        class_noun=spec.class_noun,
        default_formats=settings.default_marketplaces,
        default_scenes=settings.default_scenes,
        scene_count=settings.scene_count,
        templates_dir=settings.templates_dir,
        extra_templates_dir=settings.extra_templates_dir,
    )
    settings = settings.with_training_preset(spec.training_preset)

    photos, problems = stages.run(
        "ingest_photos", tasks.download_photos, settings, catalogue_id, sku, work / "photos"
    )
    uploaded = len(photos) + len(problems)
    cutouts, unclean = stages.run("clean", tasks.clean_photos, settings, photos, work / "cutouts")
    problems += unclean
    for problem in problems:
        log.warning("SKU %s: photo not used: %s", sku, problem.reason)
    cleaning.require_usable_photos(sku, cutouts, problems, uploaded=uploaded, minimum=settings.min_photos)

    prompts = stages.run("identify", tasks.choose_prompts, settings, sku, spec.class_noun, taken)
    class_paths = stages.run("priors", tasks.class_images, settings, spec.class_noun, work / "priors")
    trained = stages.run(
        "train", tasks.train, settings, catalogue_id, sku, cutouts, class_paths, prompts, work / "lora"
    )
    made = stages.run(
        "cards", tasks.make_cards, settings, plan, prompts, trained.lora_file, cutouts, work / "cards"
    )

    manifest, files = build_manifest(
        catalogue_id=catalogue_id,
        sku=sku,
        run=run,
        spec=spec,
        settings=settings,
        prompts=prompts,
        photos=photos,
        problems=problems,
        cutouts=cutouts,
        trained=trained,
        cards=made,
        timings=stages.timings,
    )
    url = stages.run("publish", tasks.publish_sku, settings, manifest, files)
    log.info("SKU %s published: %s", sku, url)
    return SkuOutcome(
        catalogue_id=catalogue_id,
        sku=sku,
        status="published",
        manifest=url,
        cards=sum(c.status == "published" for c in made),
        identifier=prompts.identifier,
        problems=problems,
    )
