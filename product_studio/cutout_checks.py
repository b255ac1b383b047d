"""Is a cutout clean enough to paste into a composite card as the product's own pixels?

A cleaner keeps whatever it takes for the object: the hand holding the product, a prop beside it, the block
it stands on. Training copes with that (the LoRA learns the product common to the photos), but a composite
card shows the cutout's pixels as they are. Each cutout is judged before it is used for one:

- **edge** -- the mask reaches the edge of what the cleaner could see (the photo's border, or GrabCut's
  search rectangle): an arm entering the frame, or the product cut off;
- **parts** -- several large disconnected parts: a second object, not one product;
- **outline** -- its outline (aligned by bounding box) unlike the median outline of the SKU's cutouts, or its
  aspect far from theirs: the product is the object common to the seller's photos.

A photo that fails is "not used for composites" with the reason; it stays in training.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from product_studio.records import CleanedPhoto

EDGE_BAND = 0.01  # of the photo's side, beyond the cleaner's own frame: "at the edge"
EDGE_SPAN = 0.03  # of the side: how much of that edge the mask must run along to touch it
PART_SHARE = 0.25  # a disconnected part at least this share of the largest one is a large part
OUTLINE_SIDE = 64  # outlines are compared as OUTLINE_SIDE x OUTLINE_SIDE masks of their bounding box
MIN_OUTLINE_IOU = 0.55  # least IoU of a cutout's outline with the SKU's median outline
MAX_ASPECT_RATIO = 1.6  # most a cutout's box aspect may differ (either way) from the SKU's median
MIN_FOR_OUTLINE = 3  # cutouts an SKU needs before outlines are compared (a median of two says nothing)


def edge_sides(mask: Image.Image, frame: float = 0.0) -> list[str]:
    """The sides of the photo (``left``, ``top``, ``right``, ``bottom``) whose edge the mask touches.

    ``frame``: the share of each side the cleaner never looks at (GrabCut's margin; 0 for rembg).
    """
    binary = np.asarray(mask) >= 128
    h, w = binary.shape
    bx, by = max(1, math.ceil((frame + EDGE_BAND) * w)), max(1, math.ceil((frame + EDGE_BAND) * h))
    strips = {
        "left": binary[:, :bx].any(axis=1),
        "top": binary[:by, :].any(axis=0),
        "right": binary[:, w - bx :].any(axis=1),
        "bottom": binary[h - by :, :].any(axis=0),
    }
    return [side for side, run in strips.items() if run.sum() >= EDGE_SPAN * run.size]


def large_parts(mask: Image.Image) -> int:
    """How many disconnected parts of the mask are at least ``PART_SHARE`` of the largest."""
    import cv2

    binary = (np.asarray(mask) >= 128).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return 0
    areas = stats[1:, cv2.CC_STAT_AREA]
    return int((areas >= PART_SHARE * areas.max()).sum())


def photo_problem(mask: Image.Image, frame: float = 0.0) -> str | None:
    """Why a photo's mask makes its cutout unfit for composites (edge, parts), or None."""
    parts = large_parts(mask)
    if parts > 1:
        return f"the cutout has {parts} large separate parts (another object beside the product)"
    sides = edge_sides(mask, frame)
    if sides:
        return (
            f"the cutout touches the photo's {' and '.join(sides)} edge (a hand or arm entering the frame, "
            "or the product cut off)"
        )
    return None


def _outline(path: str) -> tuple[np.ndarray, float]:
    """A cutout's alpha inside its bounding box, as an ``OUTLINE_SIDE`` square bool mask, and its aspect."""
    with Image.open(path) as image:
        alpha = image.getchannel("A").point(lambda v: 255 if v >= 128 else 0)
    box = alpha.getbbox()
    if box is None:
        return np.zeros((OUTLINE_SIDE, OUTLINE_SIDE), bool), 1.0
    crop = alpha.crop(box).resize((OUTLINE_SIDE, OUTLINE_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(crop) >= 128, (box[2] - box[0]) / (box[3] - box[1])


def judge_outlines(cutouts: list[CleanedPhoto]) -> list[CleanedPhoto]:
    """The cutouts with ``outline_match`` (IoU with the SKU's median outline) and, where the outline or the
    aspect is unlike the others', the reason they are not used for composites (an earlier reason stays)."""
    if len(cutouts) < MIN_FOR_OUTLINE:
        return cutouts
    outlines = [_outline(str(c.cutout_path)) for c in cutouts]
    masks = np.stack([m for m, _ in outlines])
    median = masks.mean(axis=0) >= 0.5
    median_aspect = float(np.median([a for _, a in outlines]))
    judged = []
    for cutout, (mask, aspect) in zip(cutouts, outlines, strict=True):
        union = int((mask | median).sum())
        iou = round(int((mask & median).sum()) / union, 3) if union else 0.0
        off = max(aspect / median_aspect, median_aspect / aspect)
        reason = cutout.not_for_composites
        if reason is None and (iou < MIN_OUTLINE_IOU or off > MAX_ASPECT_RATIO):
            reason = (
                f"its outline is unlike the product's in the other photos (overlap {iou:.2f}, aspect "
                f"{aspect:.2f} against {median_aspect:.2f}): something else was kept with the product"
            )
        judged.append(cutout.model_copy(update={"outline_match": iou, "not_for_composites": reason}))
    return judged


def cleanest(cutouts: list[CleanedPhoto]) -> CleanedPhoto | None:
    """The cutout composites (and the main image) use: the first, in the seller's order, that passes every
    check; None when none does.

    Not the best outline match: every passing cutout is clean, the seller's first photo is the one they chose
    to lead with, and a re-run must not swap the main image for another photo of equal merit.
    """
    return next((c for c in cutouts if c.not_for_composites is None), None)
