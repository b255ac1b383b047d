"""Content keys: what decides an SKU's results, hashed, so an unchanged SKU is not made again.

``content_key`` covers everything a published run depends on: the photos' sha256, ``product.json`` (as
parsed), the identifier, the effective settings (the SKU's training preset merged in; not where files go or
how the run is scheduled), the base model's id and revision, the scene templates and card formats used, and
the pipeline's version. A run whose published manifest carries the same key has nothing to do (``skipped``).

``training_key`` covers only what the LoRA depends on, so an SKU whose scenes or formats changed reuses
its trained LoRA instead of training again.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from product_studio.cards.making import CardPlan
    from product_studio.ingest import ProductSpec
    from product_studio.records import PhotoRecord
    from product_studio.settings import Settings

# Settings that say where files go and how runs are scheduled, not what a card looks like.
_NOT_IN_KEY = {
    "incoming",
    "output",
    "marketplace",
    "work_dir",
    "schedule_cron",
    "batch_deployment",
    "batch_runs",
    "batch_wait_seconds",
    "catalogue_deployment",
    "retry_deployment",
    "lease_seconds",
    "lease_wait_seconds",
    "worker_name",
    "device",  # 'auto' on one pool and 'cuda' on another are the same GPU run
    "templates_dir",  # the templates themselves are in the key
    "extra_templates_dir",
    "default_scenes",  # folded into the plan
    "default_marketplaces",
    "scene_count",
}
# Train settings that change what a run shows (checkpoints, validation renders), not the LoRA.
_NOT_IN_TRAINING_KEY = {
    "checkpoint_every",
    "validation_every",
    "validation_prompts",
    "validation_steps",
    "when",  # whether to train, not what is trained
}
_PACKAGES = ("product-studio", "diffusers", "transformers", "peft", "torch", "rembg")


@cache
def pipeline_version() -> dict[str, str]:
    """The versions of the code that makes a card (a new release makes every SKU again); read once."""
    found = {}
    for dist in _PACKAGES:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def training_key(
    *,
    photos: list[PhotoRecord],
    settings: Settings,
    base_model: dict[str, str],
    identifier: str,
    class_noun: str,
) -> str:
    """A hash of what the trained LoRA depends on."""
    return _digest(
        {
            "photos": sorted(p.sha256 for p in photos),
            "cleaner": settings.cleaner,
            "train": settings.train.model_dump(mode="json", exclude=_NOT_IN_TRAINING_KEY),
            "dtype": settings.dtype,
            "prior_steps": settings.render.prior_steps,
            "base_model": base_model,
            "identifier": identifier,
            "class_noun": class_noun,
            "version": pipeline_version(),
        }
    )


def content_key(
    *,
    spec: ProductSpec,
    photos: list[PhotoRecord],
    settings: Settings,
    base_model: dict[str, str],
    plan: CardPlan,
    identifier: str,
) -> str:
    """A hash of everything a published run of the SKU depends on."""
    return _digest(
        {
            "photos": sorted((p.file, p.sha256) for p in photos),
            "product": spec.model_dump(mode="json"),
            "identifier": identifier,
            "settings": settings.model_dump(mode="json", exclude=_NOT_IN_KEY),
            "base_model": base_model,
            "templates": [t.model_dump(mode="json") for t in plan.templates],
            "formats": [f.model_dump(mode="json") for f in plan.formats],
            "version": pipeline_version(),
        }
    )


def sku_keys(
    spec: ProductSpec, photos: list[PhotoRecord], settings: Settings, plan: CardPlan, identifier: str
) -> tuple[str, str]:
    """An SKU's (content key, training key) under ``settings`` (its training preset merged in)."""
    from product_studio.models import model_identity

    base = model_identity(settings.base_model)
    return (
        content_key(
            spec=spec, photos=photos, settings=settings, base_model=base, plan=plan, identifier=identifier
        ),
        training_key(
            photos=photos,
            settings=settings,
            base_model=base,
            identifier=identifier,
            class_noun=spec.class_noun,
        ),
    )
