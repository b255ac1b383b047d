"""Contact sheets: an SKU's cards side by side in one small image, for a catalogue's review index."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

WHITE = (255, 255, 255)
LABEL_HEIGHT = 16  # the band under each cell that holds its label
_Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _open(image: Path | bytes) -> Image.Image:
    """An image from a file or encoded bytes, RGBA (its transparency is laid on white later)."""
    with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as opened:
        return ImageOps.exif_transpose(opened).convert("RGBA")


def _fit_label(draw: ImageDraw.ImageDraw, text: str, font: _Font, width: int) -> str:
    """``text``, shortened with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def contact_sheet(
    images: list[Path | bytes], *, cell: int = 256, columns: int = 4, labels: list[str] | None = None
) -> Image.Image:
    """The images in a grid on white, left to right, each scaled to fit a ``cell`` square (letterboxed).

    The grid is ``min(columns, len(images))`` cells wide; with ``labels`` each cell has its label
    (shortened to fit) in a band below it.
    """
    if not images:
        raise ValueError("a contact sheet needs at least one image; got an empty list")
    if cell < 16 or columns < 1:
        raise ValueError(f"cell must be >= 16 and columns >= 1; got cell={cell}, columns={columns}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images; give one label per image")
    across = min(columns, len(images))
    down = -(-len(images) // across)
    band = LABEL_HEIGHT if labels is not None else 0
    sheet = Image.new("RGB", (across * cell, down * (cell + band)), WHITE)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, source in enumerate(images):
        x, y = (i % across) * cell, (i // across) * (cell + band)
        image = ImageOps.contain(_open(source), (cell, cell), Image.Resampling.LANCZOS)
        left, top = x + (cell - image.width) // 2, y + (cell - image.height) // 2
        sheet.paste(image, (left, top), image)  # the alpha as mask: transparent parts stay white
        if labels is not None:
            text = _fit_label(draw, labels[i], font, cell - 4)
            left = x + (cell - draw.textlength(text, font=font)) / 2
            draw.text((left, y + cell + 2), text, fill=(60, 60, 60), font=font)
    return sheet


def to_jpeg(image: Image.Image, *, quality: int = 85) -> bytes:
    """``image`` encoded as an optimised baseline JPEG."""
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()
