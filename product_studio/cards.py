"""Cards: marketplace presets (exact size, aspect and background) and composing card images.

A ``cutout`` preset shows the *real* product only -- the cleaned seller photo on pure white, never a
generated image -- because a marketplace's main image must show exactly what the buyer receives.
A ``scene`` preset crops a rendered scene to the preset's aspect and scales it to the exact size.
"""

from __future__ import annotations

from typing import Literal

from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field


class CardPreset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    title: str
    width: int = Field(ge=64, le=10_000)
    height: int = Field(ge=64, le=10_000)
    kind: Literal["cutout", "scene"]
    fill: float = Field(0.85, gt=0, le=1, description="cutout: share of the shorter side the product spans")
    format: Literal["JPEG", "PNG"] = "JPEG"


PRESETS: dict[str, CardPreset] = {
    p.id: p
    for p in (
        CardPreset(
            id="main-white",
            title="Main image: real product on pure white, 1:1",
            width=1600,
            height=1600,
            kind="cutout",
            fill=0.85,
        ),
        CardPreset(id="scene-square", title="Lifestyle scene, 1:1", width=1200, height=1200, kind="scene"),
        CardPreset(
            id="scene-portrait", title="Lifestyle scene, 4:5 portrait", width=1080, height=1350, kind="scene"
        ),
        CardPreset(id="scene-wide", title="Lifestyle banner, 16:9", width=1920, height=1080, kind="scene"),
    )
}


class PresetError(ValueError):
    """An unknown card preset id."""


def select_presets(ids: list[str]) -> list[CardPreset]:
    unknown = [i for i in ids if i not in PRESETS]
    if unknown:
        raise PresetError(f"unknown marketplace preset(s) {unknown}; available: {sorted(PRESETS)}")
    return [PRESETS[i] for i in ids]


def compose_cutout_card(preset: CardPreset, cutout: Image.Image) -> Image.Image:
    """The real product (an RGBA cutout) centred on pure white at the preset's exact size."""
    rgba = cutout.convert("RGBA")
    box = rgba.getchannel("A").point(lambda v: 255 if v >= 128 else 0).getbbox()
    if box is None:
        raise ValueError("cutout is fully transparent")
    product = rgba.crop(box)
    target = preset.fill * min(preset.width, preset.height)
    scale = target / max(product.size)
    product = product.resize(
        (max(1, round(product.width * scale)), max(1, round(product.height * scale))),
        Image.Resampling.LANCZOS,
    )
    canvas = Image.new("RGBA", (preset.width, preset.height), (255, 255, 255, 255))
    canvas.alpha_composite(
        product, ((preset.width - product.width) // 2, (preset.height - product.height) // 2)
    )
    return canvas.convert("RGB")


def compose_scene_card(preset: CardPreset, scene: Image.Image) -> Image.Image:
    """A rendered scene centre-cropped to the preset's aspect and scaled to its exact size."""
    return ImageOps.fit(scene.convert("RGB"), (preset.width, preset.height), Image.Resampling.LANCZOS)
