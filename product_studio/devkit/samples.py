"""A small built-in sample catalogue: products drawn in code, photographed from several "angles" on
cluttered, coloured backgrounds -- for the demo and tests (no binary files in the repository)."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageFilter

from product_studio.layout import PRODUCT, READY_MARKER, catalogue_key, photos_prefix, sku_key
from product_studio.storage import Store

Draw = Callable[[ImageDraw.ImageDraw, int], None]


def _teapot(d: ImageDraw.ImageDraw, s: int) -> None:
    body, lid = (22, 128, 122), (14, 90, 86)
    d.ellipse((0.22 * s, 0.38 * s, 0.78 * s, 0.86 * s), fill=body)
    d.polygon(
        [(0.72 * s, 0.6 * s), (0.95 * s, 0.4 * s), (0.98 * s, 0.44 * s), (0.76 * s, 0.72 * s)], fill=body
    )
    d.arc((0.1 * s, 0.45 * s, 0.4 * s, 0.75 * s), 80, 280, fill=lid, width=int(0.05 * s))
    d.ellipse((0.36 * s, 0.3 * s, 0.64 * s, 0.42 * s), fill=lid)
    d.ellipse((0.47 * s, 0.24 * s, 0.53 * s, 0.31 * s), fill=(240, 200, 60))
    d.rectangle((0.3 * s, 0.6 * s, 0.7 * s, 0.64 * s), fill=(240, 200, 60))


def _backpack(d: ImageDraw.ImageDraw, s: int) -> None:
    red, dark = (196, 38, 44), (120, 20, 26)
    d.rounded_rectangle((0.22 * s, 0.18 * s, 0.78 * s, 0.92 * s), radius=int(0.12 * s), fill=red)
    d.rounded_rectangle((0.3 * s, 0.55 * s, 0.7 * s, 0.86 * s), radius=int(0.06 * s), fill=dark)
    d.arc((0.36 * s, 0.06 * s, 0.64 * s, 0.3 * s), 180, 360, fill=dark, width=int(0.04 * s))
    d.line((0.3 * s, 0.62 * s, 0.7 * s, 0.62 * s), fill=(230, 230, 230), width=max(1, int(0.012 * s)))


def _vase(d: ImageDraw.ImageDraw, s: int) -> None:
    ochre = (214, 150, 40)
    d.polygon(
        [
            (0.42 * s, 0.1 * s),
            (0.58 * s, 0.1 * s),
            (0.56 * s, 0.3 * s),
            (0.74 * s, 0.55 * s),
            (0.66 * s, 0.92 * s),
            (0.34 * s, 0.92 * s),
            (0.26 * s, 0.55 * s),
            (0.44 * s, 0.3 * s),
        ],
        fill=ochre,
    )
    for y in (0.5, 0.62, 0.74):
        d.line((0.3 * s, y * s, 0.7 * s, y * s), fill=(40, 60, 140), width=max(1, int(0.025 * s)))


SAMPLE_PRODUCTS: dict[str, tuple[str, str, Draw]] = {
    "teapot-teal": ("teapot", "Teal ceramic teapot with gold band", _teapot),
    "backpack-red": ("backpack", "Red canvas backpack", _backpack),
    "vase-ochre": ("vase", "Ochre vase with blue stripes", _vase),
}


def product_photo(draw: Draw, angle: int, size: int = 384, seed: int = 0) -> Image.Image:
    """One "photo": the product, turned and scaled per angle, centred on a busy coloured background."""
    rng = random.Random(seed * 100 + angle)
    bg = Image.new("RGB", (size, size), tuple(rng.randint(60, 200) for _ in range(3)))
    bd = ImageDraw.Draw(bg)
    for _ in range(6):  # clutter in the corners, as on a real shelf or desk
        x = rng.choice([rng.randint(0, size // 6), rng.randint(5 * size // 6, size)])
        y = rng.choice([rng.randint(0, size // 6), rng.randint(5 * size // 6, size)])
        r = rng.randint(size // 24, size // 12)
        bd.rectangle((x - r, y - r, x + r, y + r), fill=tuple(rng.randint(0, 255) for _ in range(3)))
    bg = bg.filter(ImageFilter.GaussianBlur(1.5))
    side = int(size * (0.62 + 0.05 * (angle % 3)))
    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw(ImageDraw.Draw(layer), side)
    layer = layer.rotate((-12, 0, 9, -5, 14)[angle % 5], resample=Image.Resampling.BICUBIC, expand=False)
    offset = ((size - side) // 2 + rng.randint(-8, 8), (size - side) // 2 + rng.randint(-8, 8))
    bg.paste(layer, offset, layer)
    return bg


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def upload_sample_catalogue(
    incoming: Store,
    catalogue_id: str,
    *,
    photos: int = 4,
    size: int = 384,
    with_corrupt_photo: bool = True,
    scenes: list[str] | None = None,
    copies: int = 1,
    products: list[str] | None = None,
) -> list[str]:
    """Upload the sample SKUs, then ``catalogue.json`` (last: it marks the catalogue ready).

    ``copies`` > 1 adds variants of each product (``<sku>-2``, ...: other colours of noise, same shapes);
    ``products`` names the sample SKUs to upload (default: all of ``SAMPLE_PRODUCTS``).
    """
    unknown = sorted(set(products or []) - SAMPLE_PRODUCTS.keys())
    if unknown:
        raise ValueError(f"unknown sample product(s) {unknown}; choose from {sorted(SAMPLE_PRODUCTS)}")
    skus: list[str] = []
    for n, (name, (noun, title, draw)) in enumerate(SAMPLE_PRODUCTS.items()):
        if products is not None and name not in products:
            continue
        for copy in range(copies):
            sku = name if copy == 0 else f"{name}-{copy + 1}"
            seed = n + 10 * copy
            spec = {"class_noun": noun, "title": title if copy == 0 else f"{title} ({copy + 1})"}
            if scenes is not None:
                spec["scenes"] = scenes
            incoming.write(sku_key(catalogue_id, sku, PRODUCT), json.dumps(spec).encode(), "application/json")
            for angle in range(photos):
                incoming.write(
                    photos_prefix(catalogue_id, sku) + f"{angle:02d}.jpg",
                    _jpeg(product_photo(draw, angle, size, seed=seed)),
                    "image/jpeg",
                )
            if with_corrupt_photo and n == 0 and copy == 0:
                # A truncated upload, as happens on flaky mobile connections: reported, not fatal.
                broken = _jpeg(product_photo(draw, 9, size, seed=seed))
                truncated = photos_prefix(catalogue_id, sku) + "99-truncated.jpg"
                incoming.write(truncated, broken[: len(broken) // 3], "image/jpeg")
            skus.append(sku)
    manifest = {"catalogue_id": catalogue_id, "skus": skus}
    ready = catalogue_key(catalogue_id, READY_MARKER)
    incoming.write(ready, json.dumps(manifest).encode(), "application/json")
    return skus
