"""Shadows: the contact and cast shadow a composite's model drew under the product, or a drawn one.

The composite's inpainting mask is everything but the product (the ground below it included), so the model
sees the product standing there and draws its contact shadow, cast shadow or reflection itself. Whether it
did is measured on the rendered surroundings: the *contact band* (a flat ellipse under the product's base,
outside the product) against the *ground beside it* (the same height, left and right of the product). A band
at least ``MIN_DARKENING`` darker than the ground is the model's shadow; otherwise a soft ellipse is drawn
(``contact_shadow``), so no product floats. The card's record says which (``render.shadow``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

MIN_DARKENING = 0.08  # the contact band is at least 8% darker than the ground beside the product


def _band(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """The contact band's mask: a flat ellipse under the product's base."""
    left, top, right, bottom = box
    w, h = right - left, bottom - top
    band = Image.new("L", size, 0)
    ImageDraw.Draw(band).ellipse(
        (left + 0.08 * w, bottom - 0.05 * h, right - 0.08 * w, bottom + 0.05 * h), fill=255
    )
    return band


def darkening(surroundings: Image.Image, product_alpha: Image.Image, box: tuple[int, int, int, int]) -> float:
    """How much darker the contact band under the product is than the ground beside it (0: not at all,
    0.3: 30% darker; negative: lighter). The product's own pixels are left out of both."""
    grey = np.asarray(surroundings.convert("L"), np.float32)
    outside = np.asarray(product_alpha, np.uint8) < 128
    band = (np.asarray(_band(surroundings.size, box)) > 0) & outside
    left, top, right, bottom = box
    w, h = right - left, bottom - top
    rows = slice(max(0, round(bottom - 0.05 * h)), min(grey.shape[0], round(bottom + 0.05 * h) + 1))
    beside = np.zeros_like(band)
    beside[rows, max(0, round(left - 0.5 * w)) : max(0, round(left - 0.1 * w))] = True
    beside[rows, min(grey.shape[1], round(right + 0.1 * w)) : min(grey.shape[1], round(right + 0.5 * w))] = (
        True
    )
    beside &= outside
    if band.sum() < 8 or beside.sum() < 8:
        return 0.0
    ground = float(grey[beside].mean())
    return (ground - float(grey[band].mean())) / max(ground, 1.0)


def model_drew_shadow(
    surroundings: Image.Image, product_alpha: Image.Image, box: tuple[int, int, int, int]
) -> bool:
    """Whether the rendered surroundings already darken the ground under the product's base."""
    return darkening(surroundings, product_alpha, box) >= MIN_DARKENING


def contact_shadow(card: Image.Image, box: tuple[int, int, int, int], strength: float = 0.45) -> Image.Image:
    """A soft ellipse of shade under the product's base (the fallback where the model drew no shadow)."""
    w = box[2] - box[0]
    shade = _band(card.size, box).point(lambda v: int(v * strength))
    shade = shade.filter(ImageFilter.GaussianBlur(max(2, 0.03 * w)))
    dark = Image.new("RGB", card.size, (0, 0, 0))
    return Image.composite(dark, card.convert("RGB"), shade)
