import io

import pytest
from PIL import Image

from product_studio.review.contact_sheet import LABEL_HEIGHT, contact_sheet, to_jpeg


def _png(size: tuple[int, int], colour: tuple[int, ...], mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, "PNG")
    return out.getvalue()


def test_cells_are_letterboxed_on_white_in_rows_of_columns(tmp_path):
    wide = tmp_path / "wide.png"
    wide.write_bytes(_png((200, 100), (255, 0, 0)))
    tall = _png((50, 100), (0, 0, 255))
    clear = _png((64, 64), (0, 255, 0, 0), "RGBA")  # fully transparent: stays white
    sheet = contact_sheet([wide, tall, clear, tall, wide], cell=64, columns=3)
    assert sheet.size == (3 * 64, 2 * 64) and sheet.mode == "RGB"
    assert sheet.getpixel((32, 32)) == (255, 0, 0)  # wide: full width, centred
    assert sheet.getpixel((32, 4)) == (255, 255, 255)  # ... with white bars above and below
    assert sheet.getpixel((96, 32)) == (0, 0, 255) and sheet.getpixel((68, 32)) == (255, 255, 255)
    assert sheet.getpixel((160, 32)) == (255, 255, 255)
    assert sheet.getpixel((160, 96)) == (255, 255, 255)  # the sixth cell is empty


def test_fewer_images_than_columns_make_a_narrower_sheet_and_labels_add_a_band():
    sheet = contact_sheet([_png((10, 10), (0, 0, 0))] * 2, cell=32, columns=4, labels=["a" * 40, "b"])
    assert sheet.size == (2 * 32, 32 + LABEL_HEIGHT)
    band = sheet.crop((0, 32, 64, 32 + LABEL_HEIGHT))
    assert band.getextrema() != ((255, 255), (255, 255), (255, 255))  # the labels are drawn


def test_bad_arguments_are_refused_with_the_values():
    with pytest.raises(ValueError, match="at least one image; got an empty list"):
        contact_sheet([])
    with pytest.raises(ValueError, match="got 1 labels for 2 images"):
        contact_sheet([_png((8, 8), (0, 0, 0))] * 2, labels=["x"])
    with pytest.raises(ValueError, match="columns=0"):
        contact_sheet([_png((8, 8), (0, 0, 0))], columns=0)


def test_jpeg_bytes_decode_to_the_sheet_size():
    sheet = contact_sheet([_png((40, 30), (10, 200, 10))], cell=48)
    with Image.open(io.BytesIO(to_jpeg(sheet))) as decoded:
        assert decoded.format == "JPEG" and decoded.size == (48, 48)
