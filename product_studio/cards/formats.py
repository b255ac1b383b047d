"""Marketplace card formats and the rules each one checks on every card it makes.

A *format* is what a marketplace asks of one image: its size, aspect, file type and limits, and for a main
image the background and how much of the frame the product fills. ``check_card`` checks a written card file
against its format -- the numbers are measured on the file, never assumed from how it was made.

Marketplaces' published rules (2026): Amazon's main image is the real product on pure white (255, 255,
255), filling at least 85% of the frame, at least 1000 px on the longest side (2000 px recommended), JPEG, at
most 10 MB. Shopify recommends 2048 x 2048 squares; eBay wants at least 500 px, 1600 px recommended, and no
borders.
Wildberries and Ozon use 3:4 verticals (1200 x 1600 recommended, at least 900 x 1200). Walmart's main image
is the product on pure white at 2200 x 2200 (at least 1500 px for zoom), filling about 85% of the frame, at
most 5 MB. Google Merchant Center takes lifestyle images as additional images: at least 500 x 500 (from
2027), 1500 x 1500 recommended, at most 16 MB and 64 MP, no borders, and an AI-made image must keep its IPTC
``trainedAlgorithmicMedia`` label -- a JPEG with its XMP, which every card carries and ``check_card``
checks. Etsy forbids renderings of handmade goods (docs/cards.md).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from product_studio.cards.quality import product_fill
from product_studio.provenance.labels import label_problem
from product_studio.records import Compliance
from product_studio.rendering.scenes import did_you_mean


class CardFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    title: str
    marketplace: str
    width: int = Field(ge=64, le=10_000)
    height: int = Field(ge=64, le=10_000)
    kind: Literal["cutout", "scene"]  # cutout: the real product only; scene: the product in a generated scene
    file_type: Literal["JPEG", "PNG"] = "JPEG"
    min_width: int = Field(500, ge=1, description="smallest width the marketplace accepts")
    min_height: int = Field(500, ge=1)
    max_bytes: int = Field(10_000_000, ge=1, description="largest file the marketplace accepts")
    fill: float = Field(0.85, gt=0, le=1, description="cutout: share of the frame the product spans")
    min_fill: float | None = Field(None, gt=0, le=1, description="rule: the product spans at least this")
    white_background: bool = Field(False, description="rule: pure white (255, 255, 255) background")
    no_borders: bool = Field(False, description="rule: no solid frame around the image")

    @property
    def extension(self) -> str:
        return "jpg" if self.file_type == "JPEG" else "png"

    @property
    def aspect(self) -> float:
        return self.width / self.height


FORMATS: dict[str, CardFormat] = {
    f.id: f
    for f in (
        CardFormat(
            id="amazon-main",
            title="Amazon main image: the real product on pure white",
            marketplace="Amazon",
            width=2000,
            height=2000,
            kind="cutout",
            min_width=1000,
            min_height=1000,
            fill=0.87,
            min_fill=0.85,
            white_background=True,
        ),
        CardFormat(
            id="walmart-main",
            title="Walmart main image: the real product on pure white",
            marketplace="Walmart",
            width=2200,
            height=2200,
            kind="cutout",
            min_width=1500,
            min_height=1500,
            max_bytes=5_000_000,
            fill=0.87,
            min_fill=0.85,
            white_background=True,
        ),
        CardFormat(
            id="google-shopping",
            title="Google Shopping lifestyle image, square, labelled",
            marketplace="Google Shopping",
            width=1500,
            height=1500,
            kind="scene",
            max_bytes=16_000_000,
            no_borders=True,
        ),
        CardFormat(
            id="amazon-lifestyle",
            title="Amazon lifestyle image, square",
            marketplace="Amazon",
            width=2000,
            height=2000,
            kind="scene",
            min_width=1000,
            min_height=1000,
        ),
        CardFormat(
            id="shopify-square",
            title="Shopify product image, square",
            marketplace="Shopify",
            width=2048,
            height=2048,
            kind="scene",
            max_bytes=20_000_000,
        ),
        CardFormat(
            id="ebay-square",
            title="eBay listing photo, square, no borders",
            marketplace="eBay",
            width=1600,
            height=1600,
            kind="scene",
            max_bytes=12_000_000,
            no_borders=True,
        ),
        CardFormat(
            id="wildberries-vertical",
            title="Wildberries card, 3:4 vertical",
            marketplace="Wildberries",
            width=1200,
            height=1600,
            kind="scene",
            min_width=900,
            min_height=1200,
        ),
        CardFormat(
            id="ozon-vertical",
            title="Ozon card, 3:4 vertical",
            marketplace="Ozon",
            width=1200,
            height=1600,
            kind="scene",
            min_width=900,
            min_height=1200,
        ),
        CardFormat(
            id="social-portrait",
            title="Social shop post, 4:5 portrait",
            marketplace="Instagram/Facebook shops",
            width=1080,
            height=1350,
            kind="scene",
            min_width=600,
            min_height=750,
            max_bytes=8_000_000,
        ),
        CardFormat(
            id="banner-16x9",
            title="Store banner, 16:9",
            marketplace="any storefront",
            width=1920,
            height=1080,
            kind="scene",
            min_width=1280,
            min_height=720,
        ),
    )
}

# Earlier format ids, still read from product.json and the settings (docs/cards.md, *Marketplace formats*).
ALIASES = {
    "main-white": "amazon-main",
    "scene-square": "ebay-square",
    "scene-portrait": "social-portrait",
    "scene-wide": "banner-16x9",
}


class FormatError(ValueError):
    """An unknown card format id."""


def resolve(format_id: str) -> str:
    """The current id of a format id or one of its old aliases."""
    return ALIASES.get(format_id, format_id)


def select_formats(ids: list[str]) -> list[CardFormat]:
    """The formats ``ids`` name (old aliases accepted), in order; an unknown id is a FormatError."""
    unknown = [i for i in ids if resolve(i) not in FORMATS]
    if unknown:
        raise FormatError(
            f"unknown marketplace format(s) {unknown}{did_you_mean(unknown, [*FORMATS, *ALIASES])}; "
            f"`product-studio formats list` shows all {len(FORMATS)}"
        )
    chosen = [FORMATS[resolve(i)] for i in ids]
    twice = sorted({f.id for f in chosen if chosen.count(f) > 1})
    if twice:
        raise FormatError(f"format(s) {twice} listed more than once (an old alias names a current id)")
    return chosen


# --- the rules ----------------------------------------------------------------------------------------


def white_border_share(pixels: np.ndarray, border: int = 8) -> float:
    """Share of the pixels in the outer ``border`` that are pure white (255 in every channel)."""
    edges = np.concatenate(
        [
            pixels[:border].reshape(-1, 3),
            pixels[-border:].reshape(-1, 3),
            pixels[:, :border].reshape(-1, 3),
            pixels[:, -border:].reshape(-1, 3),
        ]
    )
    return float((edges == 255).all(axis=1).mean())


def has_border(pixels: np.ndarray, width: int = 4) -> bool:
    """A solid frame: every outer band of ``width`` px is one flat colour that differs from the inside."""
    bands = [pixels[:width], pixels[-width:], pixels[:, :width], pixels[:, -width:]]
    flat = all(float(b.reshape(-1, 3).astype(np.float32).std(axis=0).max()) < 2.0 for b in bands)
    if not flat:
        return False
    inside = pixels[width * 2 : -width * 2, width * 2 : -width * 2].reshape(-1, 3).astype(np.float32)
    return bool(np.abs(inside.mean(axis=0) - pixels[0, 0].astype(np.float32)).max() > 8 or inside.std() > 2)


def check_card(
    card_format: CardFormat, path: Path, mode: str | None = None, enlargement: float | None = None
) -> Compliance:
    """Check a written card file against its format's rules, measured on the file itself; with the card's
    render ``mode``, also that its XMP carries the IPTC digital source type of that mode (``labels``); with
    the ``enlargement`` of the seller's pixels (cutout cards), that the photo had the detail the format's
    minimum size asks for."""
    data = path.read_bytes()
    checks: dict[str, bool] = {}
    problems: list[str] = []

    def rule(name: str, ok: bool, problem: str) -> None:
        checks[name] = bool(ok)
        if not ok:
            problems.append(problem)

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        file_type, colours, size, icc = image.format, image.mode, image.size, image.info.get("icc_profile")
        rgb = image.convert("RGB")
    pixels = np.asarray(rgb)
    f = card_format
    rule("size", size == (f.width, f.height), f"{size[0]}x{size[1]} px, the format is {f.width}x{f.height}")
    rule(
        "min_size",
        size[0] >= f.min_width and size[1] >= f.min_height,
        f"{size[0]}x{size[1]} px is under the marketplace's minimum {f.min_width}x{f.min_height}",
    )
    rule("file_type", file_type == f.file_type, f"the file is {file_type}, the format wants {f.file_type}")
    rule(
        "colour",
        colours == "RGB" and icc is None,
        f"mode {colours}{' with an ICC profile' if icc else ''}; want sRGB",
    )
    rule("file_size", len(data) <= f.max_bytes, f"{len(data):,} bytes, over the {f.max_bytes:,}-byte limit")
    if f.white_background:
        share = white_border_share(pixels)
        rule("white_background", share >= 0.999, f"{share:.1%} of the border is pure white (255, 255, 255)")
    if f.min_fill is not None:
        fill = product_fill(rgb)
        rule("fill", fill >= f.min_fill, f"the product spans {fill:.0%} of the frame, under {f.min_fill:.0%}")
    if f.no_borders:
        rule("no_borders", not has_border(pixels), "the image has a solid border")
    if mode is not None:
        problem = label_problem(data, mode)
        rule("label", problem is None, problem or "")
    if enlargement is not None:
        detail, needed = round(min(size) / enlargement), min(f.min_width, f.min_height)
        rule(
            "source_pixels",
            detail >= needed,
            f"the seller's photo was enlarged {enlargement:.1f}x: {detail} px of real detail where "
            f"{f.id} asks for {needed}; upload a photo with the product at least {needed * f.fill:.0f} px "
            "across",
        )
    return Compliance(
        format=f.id, passed=not problems, checks=checks, problems=problems, enlargement=enlargement
    )
