"""Cards: marketplace formats (exact size, aspect and background), composing card images, and making an
SKU's whole card set.

A ``cutout`` format shows the *real* product only -- the cleaned seller photo on pure white, never a
generated image -- because a marketplace's main image must show exactly what the buyer receives.
A ``scene`` format crops a rendered scene to the format's aspect and scales it to the exact size.

"Format" here always means a marketplace card format; a training *preset* is a set of hyper-parameters
(``training.presets``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field

from product_studio import quality, rendering
from product_studio.identifiers import ProductPrompts
from product_studio.records import CardRecord, CleanedPhoto
from product_studio.scenes import SceneTemplate, load_library, select_templates

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline


class CardFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    title: str
    width: int = Field(ge=64, le=10_000)
    height: int = Field(ge=64, le=10_000)
    kind: Literal["cutout", "scene"]
    fill: float = Field(0.85, gt=0, le=1, description="cutout: share of the shorter side the product spans")
    file_type: Literal["JPEG", "PNG"] = "JPEG"

    @property
    def extension(self) -> str:
        return "jpg" if self.file_type == "JPEG" else "png"


FORMATS: dict[str, CardFormat] = {
    f.id: f
    for f in (
        CardFormat(
            id="main-white",
            title="Main image: real product on pure white, 1:1",
            width=1600,
            height=1600,
            kind="cutout",
            fill=0.85,
        ),
        CardFormat(id="scene-square", title="Lifestyle scene, 1:1", width=1200, height=1200, kind="scene"),
        CardFormat(
            id="scene-portrait", title="Lifestyle scene, 4:5 portrait", width=1080, height=1350, kind="scene"
        ),
        CardFormat(id="scene-wide", title="Lifestyle banner, 16:9", width=1920, height=1080, kind="scene"),
    )
}


class FormatError(ValueError):
    """An unknown card format id."""


def select_formats(ids: list[str]) -> list[CardFormat]:
    unknown = [i for i in ids if i not in FORMATS]
    if unknown:
        raise FormatError(f"unknown marketplace format(s) {unknown}; available: {sorted(FORMATS)}")
    return [FORMATS[i] for i in ids]


class CardPlan(BaseModel):
    """The cards an SKU gets: its formats and, for scene formats, its scene templates."""

    model_config = ConfigDict(frozen=True)

    formats: list[CardFormat]
    templates: list[SceneTemplate]


def plan_cards(
    format_ids: list[str],
    scene_ids: list[str],
    *,
    default_formats: list[str],
    default_scenes: list[str],
    templates_dir: Path,
) -> CardPlan:
    """The formats and templates ``product.json`` names, or the defaults; unknown ids are named errors."""
    library = load_library(templates_dir)
    return CardPlan(
        formats=select_formats(format_ids or default_formats),
        templates=select_templates(library, scene_ids or default_scenes),
    )


def compose_cutout_card(card_format: CardFormat, cutout: Image.Image) -> Image.Image:
    """The real product (an RGBA cutout) centred on pure white at the format's exact size."""
    rgba = cutout.convert("RGBA")
    box = rgba.getchannel("A").point(lambda v: 255 if v >= 128 else 0).getbbox()
    if box is None:
        raise ValueError("cutout is fully transparent")
    product = rgba.crop(box)
    target = card_format.fill * min(card_format.width, card_format.height)
    scale = target / max(product.size)
    product = product.resize(
        (max(1, round(product.width * scale)), max(1, round(product.height * scale))),
        Image.Resampling.LANCZOS,
    )
    canvas = Image.new("RGBA", (card_format.width, card_format.height), (255, 255, 255, 255))
    canvas.alpha_composite(
        product, ((card_format.width - product.width) // 2, (card_format.height - product.height) // 2)
    )
    return canvas.convert("RGB")


def compose_scene_card(card_format: CardFormat, scene: Image.Image) -> Image.Image:
    """A rendered scene centre-cropped to the format's aspect and scaled to its exact size."""
    return ImageOps.fit(
        scene.convert("RGB"), (card_format.width, card_format.height), Image.Resampling.LANCZOS
    )


def _save_card(
    image: Image.Image, card_format: CardFormat, name: str, dest: Path, hero: Image.Image, **made_with
) -> CardRecord:
    path = dest / f"{name}.{card_format.extension}"
    image.save(path, format=card_format.file_type, quality=92)
    return CardRecord(
        file=f"cards/{path.name}",
        format=card_format.id,
        preset=card_format.id,
        width=image.width,
        height=image.height,
        kind=card_format.kind,
        local_path=path,
        scores=quality.score_card(image, card_format.kind, hero),
        **made_with,
    )


def make_cards(
    plan: CardPlan,
    cutouts: list[CleanedPhoto],
    dest: Path,
    *,
    pipe: DiffusionPipeline | None = None,
    prompts: ProductPrompts | None = None,
    lora_file: Path | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
) -> list[CardRecord]:
    """Every card of an SKU: each cutout format once, each scene format once per template.

    Cutout cards show the first cutout. Scene cards render each template once with the product LoRA
    loaded into ``pipe`` (``steps``/``guidance_scale`` override the templates' own when given).
    """
    dest.mkdir(parents=True, exist_ok=True)
    hero = Image.open(cutouts[0].cutout_path)
    made = [
        _save_card(compose_cutout_card(f, hero), f, f.id, dest, hero)
        for f in plan.formats
        if f.kind == "cutout"
    ]
    scene_formats = [f for f in plan.formats if f.kind == "scene"]
    if not (scene_formats and plan.templates):
        return made
    if pipe is None or prompts is None or lora_file is None:
        raise ValueError("scene cards need the pipeline, the product's prompts and its LoRA file")
    with rendering.product_lora(pipe, lora_file):
        for template in plan.templates:
            image, used = rendering.render_scene(
                pipe, template, prompts, steps=steps, guidance_scale=guidance_scale
            )
            for f in scene_formats:
                made.append(
                    _save_card(compose_scene_card(f, image), f, f"{f.id}--{template.id}", dest, hero, **used)
                )
    return made
