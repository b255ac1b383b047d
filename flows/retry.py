"""The retry flow: scene cards a seller sent back are rendered again with new seeds, reusing the SKU's LoRA.

Started by publish-approved for an SKU with ``retry`` decisions; runs under the SKU's lease like the SKU flow.
Every other file of the published run is carried into the new run unchanged (``marketplace.rerender``). A
failure is recorded for the seller (``marketplace.retry_failures``); publish-approved gives up after a few
tries.
"""

from __future__ import annotations

import shutil

from prefect import flow, get_run_logger

from flows import tasks
from product_studio.identifiers import ProductPrompts
from product_studio.ingest import check_id
from product_studio.manifest import Manifest, new_run_id
from product_studio.marketplace import rerender, retry_failures
from product_studio.records import CardRecord, SkuOutcome
from product_studio.rendering import scenes
from product_studio.review.decisions import card_name, read_decisions
from product_studio.settings import Settings
from product_studio.text import printable


@flow(name="product-retry", flow_run_name="{catalogue_id}/{sku}-retry")
def retry_flow(catalogue_id: str, sku: str) -> SkuOutcome:
    """Re-render the scene cards whose current decision is ``retry``; ``skipped`` when there are none."""
    settings = Settings()
    check_id("catalogue", catalogue_id)
    check_id("SKU", sku)
    output, log, worker = settings.store("output"), get_run_logger(), settings.worker()
    with tasks.holding_sku(settings, catalogue_id, sku, worker) as lease:
        if isinstance(lease, str):  # another run holds the SKU
            return SkuOutcome.skipped(catalogue_id, sku, lease, worker=worker)
        published = tasks.read_published(settings, catalogue_id, sku)
        if published is None:
            raise ValueError(f"SKU {catalogue_id}/{sku} has no published run to retry cards of")
        targets, notes = rerender.retry_targets(published, read_decisions(output, published))
        for note in notes:
            log.warning("SKU %s: %s", sku, printable(note, 2000))
        if not targets:
            return SkuOutcome.skipped(catalogue_id, sku, "no card is waiting for another try", worker=worker)
        names = [card_name(t.file or "") for t in targets]
        try:
            url = _make_again(settings, published, targets)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            failure = retry_failures.record_retry_failure(output, published, names, error)
            log.error("SKU %s: %s", sku, printable(failure.message(), 2000))
            tasks.publish_sku_page(settings, published)  # the seller's page says the card was not made again
            raise
        retry_failures.clear_retry_failure(output, catalogue_id, sku)
    log.info("SKU %s: %s made again, %s", sku, ", ".join(names), url)
    links = {"manifest": url, "identifier": published.identifier, "content_key": published.content_key}
    return SkuOutcome.published(catalogue_id, sku, worker=worker, **links)


def _make_again(settings: Settings, published: Manifest, targets: list[CardRecord]) -> str:
    """Render the ``targets`` again with new seeds and the published LoRA; publish the new run (its URL)."""
    catalogue_id, sku = published.catalogue_id, published.sku
    run = new_run_id()
    work = settings.run_work_dir(catalogue_id, sku, run)
    library = scenes.load_library(settings.templates_dir, settings.extra_templates_dir)
    plans = rerender.retry_plans(targets, library)
    cutouts = tasks.published_cutouts(settings, published, work / "cutouts")
    trained = tasks.reuse_training(settings, published, published.training_key, work / "lora")
    if trained is None:
        raise ValueError(f"SKU {catalogue_id}/{sku}: its published LoRA cannot be reused")
    prompts = ProductPrompts(published.identifier, published.class_noun)
    origin = tasks.card_origin(settings, catalogue_id, sku, published.inputs.photos, trained.lora_file)
    made = [
        card
        for plan in plans
        for card in tasks.make_cards(
            settings, plan, prompts, trained.lora_file, cutouts, work / "cards", origin
        )
    ]

    manifest, dropped = rerender.retried_run(published, made, targets, run)
    files = tasks.carried_files(settings, published, manifest, dropped, work / "carried")
    files |= rerender.new_card_files(manifest)
    url = tasks.publish_sku(settings, manifest, files)
    shutil.rmtree(work, ignore_errors=True)
    return url
