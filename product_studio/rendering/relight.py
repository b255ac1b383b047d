"""Relight: the seller's own pixels under the light of the scene they were placed in.

A ``light: match`` composite is rendered twice: the surroundings around the seller's product, then the whole
finished card again by the model at a low strength over the product (``renderer``), which draws the product
as the scene would light it -- and also redraws its details, which a seller would reject. So only the
render's *light* is kept: the product region becomes the seller's pixels times a smooth gain, the render's
low frequencies over the original's (IC-Light's detail transfer, ratio form)::

    relit = original * blur(render) / blur(original)

- The blurs are normalised over the product's own opaque pixels (the background never bleeds into the gain),
  and their ratio is reduced to a smooth *light field* (``light_field``: a quadratic surface over the
  product): light, never a blotch of whatever the render redrew.
- ``sigma`` is the blur's standard deviation in card pixels: a share of the product's longer side, never
  finer than what the model rendered (the card was scaled up from its render).
- The gain is clamped to ``GAIN_LIMITS`` (a scene may halve or brighten by 60% the light on the product,
  no more) and never lifts a pixel's brightest channel past 255 (clipping would change its hue).
- ``colour="keep"`` (the default) applies one gain to all three channels: the product's hue and saturation
  are exactly the seller's. ``colour="scene"`` lets each channel's gain differ from the brightness gain by at
  most ``TINT_LIMIT`` (a warm sunset may warm the product, not repaint it).

Every relit card is checked (``detail_kept``: correlation of the high-pass of card and seller pixels over
the opaque interior; ``hue_shift_deg``: the mean change of hue of the coloured pixels); a card under
``MIN_DETAIL`` or over ``MAX_HUE_SHIFT_DEG`` is made again with ``light: keep``, and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

GAIN_LIMITS = (0.5, 1.6)
TINT_LIMIT = 0.1
SIGMA_SHARE = 0.03  # of the product's longer side in the card
FIELD_SIDE = 256  # px: the light field is measured on a copy this size across
MIN_DETAIL = 0.9  # detail_kept under this: the relight blurred or redrew the product's detail
MAX_HUE_SHIFT_DEG = 6.0  # hue_shift_deg over this: the relight changed the product's colour
EDGE_INSET = 2  # px: the checks read the opaque pixels this far inside the product's edge


@dataclass(frozen=True)
class Relit:
    """A relit product layer and what was applied: its gain range over the opaque pixels and the checks."""

    layer: Image.Image  # RGBA at card size: the seller's pixels under the scene's light, the cutout's alpha
    sigma: float
    gain: tuple[float, float]
    detail_kept: float
    hue_shift_deg: float

    def failure(self) -> str | None:
        """Why the card must keep the photo's light (None: the relight kept detail and colour)."""
        if self.detail_kept < MIN_DETAIL:
            return (
                f"the relight lost the product's detail (detail kept {self.detail_kept:.2f} < {MIN_DETAIL})"
            )
        if self.hue_shift_deg > MAX_HUE_SHIFT_DEG:
            return (
                f"the relight changed the product's colour (hue moved {self.hue_shift_deg:.1f} degrees "
                f"> {MAX_HUE_SHIFT_DEG:g})"
            )
        return None


def light_sigma(box: tuple[int, int, int, int], card: tuple[int, int], render: tuple[int, int]) -> float:
    """The blur's sigma in card pixels: ``SIGMA_SHARE`` of the product's longer side, and at least one
    rendered pixel's width at card scale (finer than that the render holds no light, only resampling)."""
    side = max(box[2] - box[0], box[3] - box[1])
    return round(max(2.0, SIGMA_SHARE * side, card[0] / render[0]), 2)


def _blur(values: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    # Zeros beyond the array: a masked blur's weight is zero there too, so a crop changes nothing.
    return cv2.GaussianBlur(values, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)


def masked_blur(rgb: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``rgb`` (H x W x 3) over the pixels ``weight`` (H x W, 0..1) holds, normalised so
    the pixels outside it do not pull the result toward their colour."""
    w = _blur(weight.astype(np.float32), sigma)
    return _blur(rgb * weight[..., None], sigma) / np.maximum(w, 1e-4)[..., None]


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def transfer(
    original: np.ndarray,
    render: np.ndarray,
    weight: np.ndarray,
    sigma: float,
    *,
    colour: str = "keep",
    limits: tuple[float, float] = GAIN_LIMITS,
) -> tuple[np.ndarray, np.ndarray]:
    """``original`` (H x W x 3, 0..255 float) under the low-frequency light of ``render``, over the pixels
    ``weight`` holds; the relit pixels and the per-pixel gain (H x W x 3) applied."""
    if colour not in ("keep", "scene"):
        raise ValueError(f"light colour must be 'keep' or 'scene', got {colour!r}")
    import cv2

    lo, hi = limits
    shape = original.shape[:2]
    # The light is a smooth field: its blurs and fit need no more than FIELD_SIDE pixels across.
    scale = min(1.0, FIELD_SIDE / max(shape))
    size = (max(1, round(shape[1] * scale)), max(1, round(shape[0] * scale)))

    def small(values: np.ndarray) -> np.ndarray:
        return values if scale == 1.0 else cv2.resize(values, size, interpolation=cv2.INTER_AREA)

    held, field_sigma = small(weight), max(0.5, sigma * scale)
    blur_o, blur_r = (
        masked_blur(small(original), held, field_sigma),
        masked_blur(small(render), held, field_sigma),
    )
    ratio = _luma(blur_r) / np.maximum(_luma(blur_o), 1.0)
    brightness = np.clip(light_field(ratio, held, shape), lo, hi)
    gain = np.repeat(brightness[..., None], 3, axis=2)
    if colour == "scene":
        for c in range(3):
            tint = blur_r[..., c] / np.maximum(blur_o[..., c], 1.0) / np.maximum(ratio, 1e-4)
            gain[..., c] *= np.clip(light_field(tint, held, shape), 1 - TINT_LIMIT, 1 + TINT_LIMIT)
    # One factor per pixel so that no channel passes 255: a clipped channel would change the hue.
    headroom = 255.0 / np.maximum((original * gain).max(axis=2), 255.0)
    gain = gain * headroom[..., None]
    return np.clip(original * gain, 0, 255), gain


def light_field(
    ratio: np.ndarray, weight: np.ndarray, shape: tuple[int, int] | None = None, step: int = 2
) -> np.ndarray:
    """The smooth light behind a ratio of blurs: a quadratic surface in the product's own coordinates fitted
    (least squares, on every ``step``-th pixel ``weight`` holds) to the ratio's logarithm, evaluated at
    ``shape`` (the full-size product's, when the ratio was measured on a reduced copy). A scene lights a
    product broadly -- brighter toward the window, warmer toward the sunset -- so a blotch of the render that
    the blur kept (a redrawn label, a pattern of noise) is not light and never reaches the card."""

    def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        return 2 * xs / max(w - 1, 1) - 1, 2 * ys / max(h - 1, 1) - 1

    def terms(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)

    out = shape or ratio.shape
    held = weight[::step, ::step] > 0
    if held.sum() < 12:
        return np.ones(out, np.float32)
    xs, ys = grid(*ratio.shape)
    sample = terms(xs[::step, ::step][held], ys[::step, ::step][held])
    target = np.log(np.maximum(ratio[::step, ::step][held], 1e-3))
    coefficients, *_ = np.linalg.lstsq(sample, target, rcond=None)
    return np.exp(terms(*grid(*out)) @ coefficients.astype(np.float32))  # evaluated at ``shape``


def interior(alpha: np.ndarray, inset: int = EDGE_INSET) -> np.ndarray:
    """The fully opaque pixels at least ``inset`` px inside the product's edge (bool H x W)."""
    import cv2

    opaque = (alpha >= 255).astype(np.uint8)
    if inset <= 0:
        return opaque.astype(bool)
    return cv2.erode(opaque, np.ones((2 * inset + 1, 2 * inset + 1), np.uint8)).astype(bool)


def detail_kept(card: np.ndarray, seller: np.ndarray, inside: np.ndarray) -> float:
    """Correlation of the high-pass (grey minus its 2 px blur) of ``card`` and ``seller`` over ``inside``:
    1.0 when the card carries every edge, print and texture of the seller's pixels, lower when a model
    redrew or smoothed them (a product with no texture at all counts as kept)."""
    a = _luma(card) - _blur(_luma(card), 2.0)
    b = _luma(seller) - _blur(_luma(seller), 2.0)
    a, b = a[inside], b[inside]
    if a.size < 16 or b.std() < 1e-3:
        return 1.0
    if a.std() < 1e-3:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def hue_shift_deg(card: np.ndarray, seller: np.ndarray, inside: np.ndarray) -> float:
    """The mean change of hue, in degrees, over the coloured pixels of ``inside`` (saturation >= 0.2,
    neither near black nor near white in the seller's photo: elsewhere hue is noise); 0 when none are."""
    import cv2

    def hsv(rgb: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)

    h_card, h_seller = hsv(card), hsv(seller)
    coloured = inside & (h_seller[..., 1] >= 0.2) & (h_seller[..., 2] >= 0.1) & (h_seller[..., 2] <= 0.97)
    if coloured.sum() < 16:
        return 0.0
    diff = np.abs(h_card[..., 0][coloured] - h_seller[..., 0][coloured]) % 360.0
    return float(np.minimum(diff, 360.0 - diff).mean())


def relight_layer(layer: Image.Image, render: Image.Image, sigma: float, *, colour: str = "keep") -> Relit:
    """The placed product ``layer`` (RGBA, card size) under the light of ``render`` (the model's relit card,
    RGB, card size): its gain range and the detail and hue checks against the seller's pixels."""
    rgba = np.asarray(layer.convert("RGBA"))
    box = layer.getchannel("A").getbbox()
    if box is None:
        raise ValueError("the product layer is fully transparent")
    left, top, right, bottom = box  # the product's pixels: the only ones relit and checked
    crop = rgba[top:bottom, left:right]
    alpha = crop[..., 3]
    original = crop[..., :3].astype(np.float32)
    weight = (alpha >= 128).astype(np.float32)
    scene = np.asarray(render.convert("RGB"), np.float32)[top:bottom, left:right]
    relit, gain = transfer(original, scene, weight, sigma, colour=colour)
    pixels = np.rint(relit).astype(np.uint8)
    inside = interior(alpha)
    out = rgba.copy()
    out[top:bottom, left:right, :3] = pixels
    applied = gain.mean(axis=2)[alpha >= 128] if (alpha >= 128).any() else np.ones(1)
    return Relit(
        layer=Image.fromarray(out, "RGBA"),
        sigma=sigma,
        gain=(round(float(applied.min()), 3), round(float(applied.max()), 3)),
        detail_kept=round(detail_kept(pixels.astype(np.float32), original, inside), 4),
        hue_shift_deg=round(hue_shift_deg(pixels.astype(np.float32), original, inside), 3),
    )
