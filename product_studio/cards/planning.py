"""Which cards an SKU gets: its marketplace formats and scene templates (``plan_cards``), and the seeds of
scenes a seller sent back (``CardPlan.seeds``).

"Format" always means a marketplace card format (``formats``); a training *preset* is a set of
hyper-parameters (``training.presets``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from product_studio import cutout_checks
from product_studio.cards.formats import CardFormat, select_formats
from product_studio.records import CleanedPhoto
from product_studio.rendering.scenes import SceneTemplate, choose_templates, load_library, select_templates

if TYPE_CHECKING:
    from product_studio.ingest import ProductSpec


class CardPlan(BaseModel):
    """The cards an SKU gets: its formats and, for scene formats, its scene templates."""

    model_config = ConfigDict(frozen=True)

    formats: list[CardFormat]
    templates: list[SceneTemplate]
    # A scene's seed in one format where it is not the template's own (``rerender.keep_tries``), by
    # ``seed_key(template id, format id)``.
    seeds: dict[str, int] = {}

    def preview(self, zero_shot: bool = False) -> CardPlan:
        """The cards that need no product LoRA: every cutout format, and the scene formats with the
        templates that do not use it (``SceneTemplate.uses_lora``); with ``zero_shot`` (a base model that
        takes reference images) generate templates too, rendered from the cutouts alone."""
        templates = [
            t
            for t in self.templates
            if not t.uses_lora or (zero_shot and t.mode == "generate" and t.needs_lora is None)
        ]
        formats = [f for f in self.formats if f.kind == "cutout" or templates]
        return self.model_copy(update={"formats": formats, "templates": templates})

    def after_training(self) -> CardPlan:
        """The cards the preview leaves: the scene formats with the templates that use the LoRA."""
        templates = [t for t in self.templates if t.uses_lora]
        formats = [f for f in self.formats if f.kind == "scene" and templates]
        return self.model_copy(update={"formats": formats, "templates": templates})

    def card_names(self) -> list[str]:
        """The scene cards' names (``<format>--<template>``), as a manifest's ``coming`` lists them."""
        scenes = [f for f in self.formats if f.kind == "scene"]
        return [f"{f.id}--{t.id}" for t in self.templates for f in scenes]

    def seeded(self, template: SceneTemplate, card_format: CardFormat) -> SceneTemplate:
        """``template`` with the seed its cards in ``card_format`` are rendered from."""
        seed = self.seeds.get(seed_key(template.id, card_format.id))
        return template if seed is None else template.model_copy(update={"seed": seed})


def seed_key(template: str, card_format: str) -> str:
    """The key of a (scene template, card format) pair in :attr:`CardPlan.seeds`."""
    return f"{template}@{card_format}"


def plan_cards(
    format_ids: list[str],
    scene_ids: list[str],
    *,
    class_noun: str = "",
    default_formats: list[str],
    default_scenes: list[str],
    scene_count: int = 3,
    templates_dir: Path,
    extra_templates_dir: Path | None = None,
) -> CardPlan:
    """The formats and templates ``product.json`` names; else the defaults; else the ``scene_count``
    templates that suit the product best. Unknown ids are errors that name them."""
    library = load_library(templates_dir, extra_templates_dir)
    if scene_ids or default_scenes:
        templates = select_templates(library, scene_ids or default_scenes)
    else:
        templates = choose_templates(library, class_noun, scene_count)
    return CardPlan(formats=select_formats(format_ids or default_formats), templates=templates)


class PlanDefaults(BaseModel):
    """What an SKU gets when its ``product.json`` names no formats or scenes, and where the templates are
    (``Settings.plan_defaults``: ``PRODUCT_STUDIO_DEFAULT_MARKETPLACES``, ``_DEFAULT_SCENES``, ...)."""

    model_config = ConfigDict(frozen=True)

    formats: list[str]
    scenes: list[str] = []
    scene_count: int = 3
    templates_dir: Path
    extra_templates_dir: Path | None = None


def plan_for(spec: ProductSpec, defaults: PlanDefaults) -> CardPlan:
    """:func:`plan_cards` for an SKU's ``product.json``."""
    return plan_cards(
        spec.card_formats,
        spec.scenes,
        class_noun=spec.class_noun,
        default_formats=defaults.formats,
        default_scenes=defaults.scenes,
        scene_count=defaults.scene_count,
        templates_dir=defaults.templates_dir,
        extra_templates_dir=defaults.extra_templates_dir,
    )


def plan_for_cutouts(plan: CardPlan, cutouts: list[CleanedPhoto]) -> CardPlan:
    """``plan`` with its composite templates generated instead when no cutout is fit to paste into a card
    (each one kept a hand, a prop or the edge of the photo: ``cutout_checks``)."""
    if cutout_checks.cleanest(cutouts) is not None:
        return plan
    templates = [
        t.model_copy(update={"mode": "generate", "needs_lora": True}) if t.mode == "composite" else t
        for t in plan.templates
    ]
    return plan.model_copy(update={"templates": templates})
