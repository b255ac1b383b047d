"""Matting: a product mask made at the cleaner's working size, refined at the photo's own resolution.

Cleaners see a photo small (GrabCut 384 px, U^2-Net 320, IS-Net/BEN/BiRefNet 1024); their mask, scaled up to
a 3000 px photo, has an edge several pixels soft that cuts through the product's real outline. A guided filter
(He, Sun and Tang, "Guided Image Filtering", 2010) re-fits that edge to the photo's own: in every window the
alpha is a linear function of the photo's brightness, so it follows the product's real outline at full
resolution while flat areas keep the cleaner's decision. The window spans ``RADIUS_SCALE`` of the cleaner's
pixels (its edge may be a pixel or two off); the result is cut at one half (a sharp, true outline) and given
back the photo's own anti-aliased edge by a 2 px guided filter. On a 2400 px photo cleaned by GrabCut at 384
px, the mean alpha error within 15 px of the true outline falls from 50 to 4 (of 255; tests/test_cleaning.py).
The cutout then keeps every pixel the seller shot.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Photos up to this many times a cleaner's working size keep its (scaled) mask: nothing to refine.
REFINE_ABOVE = 1.5
EPS = 1e-4  # the guided filter's regularisation (brightness 0..1): lower follows finer edges
RADIUS_SCALE = 6  # the window's radius, in the cleaner's pixels
EDGE_RADIUS = 2  # px: the last, photo-sized pass that restores the edge's anti-aliasing


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float = EPS) -> np.ndarray:
    """``source`` (H x W, 0..1) filtered with the edges of ``guide`` (H x W, 0..1), window ``2r+1``."""
    import cv2

    def mean(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = mean(guide), mean(source)
    var_i = mean(guide * guide) - mean_i * mean_i
    a = (mean(guide * source) - mean_i * mean_p) / (var_i + eps)
    b = mean_p - a * mean_i
    return mean(a) * guide + mean(b)


def refine_mask(image: Image.Image, mask: Image.Image, work_side: int) -> Image.Image:
    """``mask`` (L, the photo's size, scaled up from a cleaner that worked at ``work_side``) with its edge
    re-fitted to ``image``'s at full resolution; unchanged when the photo is not much larger than that."""
    if max(image.size) <= REFINE_ABOVE * work_side:
        return mask
    radius = max(2, round(RADIUS_SCALE * max(image.size) / work_side))
    guide = np.asarray(image.convert("L"), np.float32) / 255.0
    fitted = guided_filter(guide, np.asarray(mask, np.float32) / 255.0, radius) >= 0.5
    alpha = guided_filter(guide, fitted.astype(np.float32), EDGE_RADIUS)
    return Image.fromarray(np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8), "L")
