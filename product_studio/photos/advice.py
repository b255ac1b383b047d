"""Photo-set advice: which of a seller's photos to retake, and why, before a LoRA is trained on them.

DreamBooth learns a product from 3-5 *varied*, sharp views. Each photo is measured when it is cleaned:

- **blur** -- the share of the product's fine detail (the Laplacian's energy on the edges of its bounding
  box, the photo seen at most ``MEASURE_SIDE`` px) that survives a further 1 px Gaussian blur. A sharp photo
  has detail finer than that blur and keeps little of it; a blurred one has none and keeps most. On the
  DreamBench product photos the sharp ones keep at most 0.17, copies blurred by 1.5-3 px at least 0.23: a
  photo keeping more than ``MAX_BLUR`` is called blurred (a ratio, so it does not depend on how textured the
  product is, unlike the Laplacian's variance alone).
- **product share** -- the product's longer side over the photo's longer side; under ``MIN_SHARE`` the
  product is small in the frame (its detail is a few hundred pixels, the rest is background).
- **near-duplicates** -- a 63-bit perceptual hash of the whole photo (the signs of the low 8 x 8 DCT
  frequencies of its 32 x 32 grey thumbnail, against their median): two photos at most ``DUPLICATE_BITS``
  apart show the same view. On DreamBench, different views of one product are at least 16 bits apart; a
  photo shifted 4%, 10% brighter and scaled 3/4 stays within 14 of itself.

A photo with a problem still trains (it is the seller's product); the set's *usable views* are the photos
without a problem, near-duplicates counted once. Fewer than ``MIN_VIEWS`` and the seller's page says which
photos to retake and why, in plain words.
"""

from __future__ import annotations

import itertools

import numpy as np
from PIL import Image

from product_studio.records import CleanedPhoto, PhotoSetAdvice

MEASURE_SIDE = 1024
MAX_BLUR = 0.2
EDGE_GRADIENT = 40.0  # Sobel magnitude (about 5 grey levels a pixel): where the blur is measured
MIN_SHARE = 0.35
DUPLICATE_BITS = 12
MIN_VIEWS = 3

BLURRED = "it is blurred: hold the camera still, tap the product to focus, and use more light"
SMALL = "the product is small in the photo: move closer so it fills most of the frame"
SAME_VIEW = "it shows the same view as {other}: take it from another side"


def blur(image: Image.Image, mask: Image.Image) -> float:
    """The share of the product's fine detail a further 1 px blur keeps (0: razor sharp, 1: no detail),
    measured on its edges: flat areas hold only 8-bit rounding, which any blur removes."""
    import cv2

    box = mask.point(lambda v: 255 if v >= 128 else 0).getbbox()
    grey = image.convert("L").crop(box) if box else image.convert("L")
    scale = min(1.0, MEASURE_SIDE / max(image.size))
    if scale < 1.0:
        size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
        grey = grey.resize(size, Image.Resampling.BOX)
    pixels = np.asarray(grey, np.float32)
    softened = cv2.GaussianBlur(pixels, (0, 0), 1.0)
    gradient = np.hypot(cv2.Sobel(softened, cv2.CV_32F, 1, 0), cv2.Sobel(softened, cv2.CV_32F, 0, 1))
    edges = gradient > EDGE_GRADIENT
    if edges.sum() < 64:
        return 1.0  # no edge at all: nothing in focus
    sharp = float(np.square(cv2.Laplacian(pixels, cv2.CV_32F)[edges]).mean())
    kept = float(np.square(cv2.Laplacian(softened, cv2.CV_32F)[edges]).mean())
    return round(kept / max(sharp, 1e-6), 4)


def perceptual_hash(image: Image.Image) -> str:
    """The photo's 63-bit perceptual hash, as 16 hex digits."""
    from scipy.fft import dctn

    grey = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), np.float32)
    low = dctn(grey, norm="ortho")[:8, :8].flatten()[1:]  # without the mean brightness
    bits = low > np.median(low)
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def hash_distance(a: str, b: str) -> int:
    """How many bits two perceptual hashes differ in."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def photo_problems(photo: CleanedPhoto) -> list[str]:
    """What is wrong with one photo on its own, in the seller's words."""
    found = []
    if photo.blur is not None and photo.blur > MAX_BLUR:
        found.append(BLURRED)
    if photo.product_share is not None and photo.product_share < MIN_SHARE:
        found.append(SMALL)
    return found


def advise(photos: list[CleanedPhoto]) -> list[CleanedPhoto]:
    """Each photo with its advice (``advice``): its own problems, and which earlier photo it repeats."""
    advice = {p.source: photo_problems(p) for p in photos}
    duplicate_of: dict[str, str] = {}
    for first, second in itertools.combinations(photos, 2):
        if second.source in duplicate_of or not (first.phash and second.phash):
            continue
        if hash_distance(first.phash, second.phash) <= DUPLICATE_BITS:
            duplicate_of[second.source] = duplicate_of.get(first.source, first.source)
            advice[second.source].append(SAME_VIEW.format(other=duplicate_of[second.source]))
    return [p.model_copy(update={"advice": advice[p.source]}) for p in photos]


def set_advice(photos: list[CleanedPhoto]) -> PhotoSetAdvice:
    """The set's usable views (photos without advice) and the photos to retake."""
    return PhotoSetAdvice(
        usable_views=sum(1 for p in photos if not p.advice),
        needed=MIN_VIEWS,
        retake=[p.source for p in photos if p.advice],
    )
