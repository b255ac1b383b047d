"""Matting: a product mask made at the cleaner's working size, refined at the photo's own resolution.

Cleaners see a photo small (GrabCut 384 px, U^2-Net 320, IS-Net/BEN/BiRefNet 1024); their mask, scaled up to
a 3000 px photo, has an edge several pixels soft that cuts through the product's real outline. A guided filter
(He, Sun and Tang, "Guided Image Filtering", 2010) re-fits that edge to the photo's own: in every window the
alpha is a linear function of the photo's brightness, so it follows the product's real outline at full
resolution while flat areas keep the cleaner's decision. The cutout then keeps every pixel the seller shot.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Photos up to this many times a cleaner's working size keep its (scaled) mask: nothing to refine.
REFINE_ABOVE = 1.5
EPS = 1e-3  # the guided filter's regularisation (brightness 0..1): lower follows finer edges


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
    radius = max(2, round(max(image.size) / work_side))
    guide = np.asarray(image.convert("L"), np.float32) / 255.0
    alpha = guided_filter(guide, np.asarray(mask, np.float32) / 255.0, radius)
    return Image.fromarray(np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8), "L")
