"""The SKU flow's cards: the preview while training is the wait, the LoRA when it is needed, the rest of the
cards and the final manifest (issue 37). Glue: the rules are the library's (``cards.planning``,
``cards.training_need``, ``manifest``, ``publish``)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from prefect import get_run_logger

from flows import tasks
from product_studio.cards import planning
from product_studio.cards.training_need import training_needed
from product_studio.identifiers import ProductPrompts
from product_studio.manifest import Manifest
from product_studio.records import CardOrigin, CardRecord, CleanedPhoto, PhotoRecord, TrainResult
from product_studio.settings import Settings


def make_and_publish(
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
