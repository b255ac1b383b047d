"""Golden seeded slices of rendering on the tiny model: a few numbers, so a deterministic change is caught.

The numbers were computed once on this code with the seeded tiny model; update them only for an intended
change (a new scheduler, another resize), and say so in the commit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from product_studio.identifiers import ProductPrompts
from product_studio.rendering import renderer, scenes, shadows

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
PROMPTS = ProductPrompts("vank", "teapot")


def _slice(image: Image.Image) -> list[float]:
    """Each channel's mean, and the mean of the top-left 8x8 patch."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    return [*pixels.mean(axis=(0, 1)).round(3), round(float(pixels[:8, :8].mean()), 3)]


def _cutout() -> Image.Image:
    cutout = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
    ImageDraw.Draw(cutout).ellipse((16, 20, 80, 84), fill=(200, 60, 40, 255))
    return cutout


def test_generate_scene_golden_slice(tiny_pipe):
    template = scenes.load_library(TEMPLATES)["in-hand"].model_copy(update={"candidates": 1, "seed": 7})
    [render] = renderer.generate_scene(tiny_pipe, template, PROMPTS, (96, 128), steps=2, guidance_scale=3.0)
    assert render.image.size == (96, 128) and render.render_size == (56, 72)
    assert _slice(render.image) == pytest.approx(GENERATE, abs=0.05)


def test_composite_scene_golden_slice_keeps_the_product(tiny_pipe, monkeypatch):
    """``light: keep`` with a drawn shadow is today's composite, bit for bit; the shadow the tiny model drew
    itself replaces the drawn one and is recorded."""
    template = scenes.load_library(TEMPLATES)["bathroom-shelf"].model_copy(
        update={"candidates": 1, "seed": 7, "light": "keep"}
    )

    def composite():
        [render] = renderer.composite_scene(
            tiny_pipe, template, PROMPTS, _cutout(), (128, 128), steps=2, guidance_scale=3.0
        )
        return render

    render = composite()
    assert render.light.mode == "keep" and render.light.requested == "keep" and render.scores is None
    assert render.shadow == "model"  # the seeded tiny model darkens the ground under the product
    assert _slice(render.image) == pytest.approx(COMPOSITE_MODEL_SHADOW, abs=0.05)
    monkeypatch.setattr(shadows, "model_drew_shadow", lambda *a: False)
    drawn = composite()
    assert drawn.shadow == "drawn"
    assert _slice(drawn.image) == pytest.approx(COMPOSITE, abs=0.05)
    # The seller's pixels are back on top, exactly, wherever the cutout is opaque (2 px inside its edge).
    layer = np.asarray(render.placed.layer)
    inside = render.placed.layer.getchannel("A").filter(ImageFilter.MinFilter(5))
    opaque = np.asarray(inside) == 255
    assert opaque.sum() > 500
    for made in (render, drawn):
        assert np.array_equal(np.asarray(made.image)[opaque], layer[..., :3][opaque])


GENERATE = [110.85, 122.448, 127.574, 138.578]
COMPOSITE = [127.85, 108.867, 109.493, 111.844]  # light: keep, drawn shadow (as before relight)
COMPOSITE_MODEL_SHADOW = [128.578, 109.6, 110.551, 111.844]
