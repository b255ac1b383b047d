"""Pixels from any photo a seller can upload: one conversion to 8-bit RGB that scales instead of clipping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB of a photo in any mode.

    16-bit greys (a PNG's ``I;16`` or ``I``) are scaled to 8 bits: Pillow's own ``convert("RGB")`` clips every
    value above 255, which turns a normal 16-bit photo into a white (blank-looking) one.
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        wide = np.asarray(image, dtype=np.float64)
        grey = np.clip(wide * (255.0 / 65535.0), 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return image.convert("RGB")


def small_copies(photos: dict[str, Path], dest: Path, max_side: int = 512) -> dict[str, Path]:
    """A small JPEG of each photo (name -> local path, every path's stem unique), upright (EXIF orientation
    applied), for review pages. The originals are never changed; the copies go to ``dest``.
    """
    from PIL import ImageOps

    dest.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    for name, path in photos.items():
        with Image.open(path) as image:
            small = to_rgb(ImageOps.exif_transpose(image))
        small.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        out = dest / f"{path.stem}.jpg"  # the local copy's name: unique within the SKU
        small.save(out, format="JPEG", quality=85)
        made[name] = out
    return made
