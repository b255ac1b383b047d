"""Quality: simple, explainable scores for a card, recorded in the manifest and shown on the review page.

- ``sharpness``: variance of the Laplacian of the grey image (higher is sharper), scaled to 0..1.
- ``white_background``: share of the border pixels that are pure white (>= 250 in every channel).
- ``product_fill``: the non-white bounding box's longer side over the canvas's shorter side.
- ``colour_match``: histogram intersection between the product's colours in the seller's cutout and the
  card's central region -- a cheap signal that the rendered product kept its colours.
- ``object_expansion`` (composite cards): the share of the product's area that a fresh segmentation of the
  card finds *outside* the placed product (beyond a small margin) -- the inpainter continuing the product's
  outline into the background ("Salient Object-Aware Background Generation", CVPR 2024). 0 is clean.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def sharpness(image: Image.Image) -> float:
    grey = image.convert("L")
    grey.thumbnail((512, 512))
    lap = np.asarray(
        grey.filter(ImageFilter.Kernel((3, 3), [0, 1, 0, 1, -4, 1, 0, 1, 0], 1, 128)), np.float32
    )
    return float(min(1.0, lap.var() / 1000.0))


def white_background(image: Image.Image, border: int = 8) -> float:
    a = np.asarray(image.convert("RGB"))
    edges = np.concatenate(
        [
            a[:border].reshape(-1, 3),
            a[-border:].reshape(-1, 3),
            a[:, :border].reshape(-1, 3),
            a[:, -border:].reshape(-1, 3),
        ]
    )
    return float((edges >= 250).all(axis=1).mean())


def product_fill(image: Image.Image) -> float:
    a = np.asarray(image.convert("RGB"))
    ys, xs = np.nonzero((a < 250).any(axis=2))
    if len(xs) == 0:
        return 0.0
    side = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    return float(side / min(a.shape[:2]))


def _histogram(pixels: np.ndarray, bins: int = 8) -> np.ndarray:
    hist, _ = np.histogramdd(pixels.reshape(-1, 3), bins=(bins,) * 3, range=((0, 256),) * 3)
    total = hist.sum()
    return hist / total if total else hist


def colour_match(card: Image.Image, cutout: Image.Image) -> float:
    rgba = np.asarray(cutout.convert("RGBA"))
    product = rgba[rgba[:, :, 3] >= 128][:, :3]
    if product.size == 0:
        return 0.0
    c = np.asarray(card.convert("RGB"))
    h, w = c.shape[:2]
    centre = c[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]
    return float(np.minimum(_histogram(product), _histogram(centre)).sum())


def score_card(card: Image.Image, kind: str, cutout: Image.Image) -> dict[str, float]:
    scores = {"sharpness": sharpness(card)}
    if kind == "cutout":
        scores |= {"white_background": white_background(card), "product_fill": product_fill(card)}
    else:
        scores["colour_match"] = colour_match(card, cutout)
    return {k: round(v, 4) for k, v in scores.items()}


def object_expansion(segmented: Image.Image, placed: Image.Image, side: int = 256) -> float:
    """Foreground that ``segmented`` (a mask of the card) finds outside ``placed`` (the product's alpha),
    dilated by 2% of the card, as a share of the placed product's area; both compared at ``side`` px."""
    size = (side, max(1, round(side * placed.height / placed.width)))
    found = np.asarray(segmented.convert("L").resize(size, Image.Resampling.BILINEAR)) >= 128
    product = placed.convert("L").resize(size, Image.Resampling.BILINEAR)
    margin = max(3, round(0.02 * side)) | 1  # odd, as MaxFilter needs
    grown = np.asarray(product.filter(ImageFilter.MaxFilter(margin))) >= 128
    area = int((np.asarray(product) >= 128).sum())
    return float((found & ~grown).sum() / max(1, area))
