"""Photo-set advice: blurred photos, small products and near-duplicate views are named for the seller, and
the set's usable views counted (``photo_advice``); thresholds checked on the DreamBench photos if here."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from product_studio import cleaning
from product_studio.devkit.samples import SAMPLE_PRODUCTS, product_photo
from product_studio.photos import advice as photo_advice
from product_studio.records import PhotoRecord

DREAMBENCH = Path(__file__).resolve().parents[2] / "shared" / "dreambench-products"


def _near_copy(image: Image.Image) -> Image.Image:
    """The same view shot again: framed 4% differently, 10% brighter, at 3/4 the size."""
    w, h = image.size
    return (
        ImageEnhance.Brightness(image.crop((int(w * 0.04), int(h * 0.03), w, h)))
        .enhance(1.1)
        .resize((w * 3 // 4, h * 3 // 4))
    )


def _blurred(image: Image.Image, pixels_at_1024: float = 1.5) -> Image.Image:
    """Blurred by ``pixels_at_1024`` px as the measure sees it (it sees at most 1024 px)."""
    return image.filter(ImageFilter.GaussianBlur(pixels_at_1024 * max(1.0, max(image.size) / 1024)))


def _photo_set(tmp_path: Path) -> list[PhotoRecord]:
    """Three good views of a teapot, then a blurred view, a near copy of view 1 and a far-away shot."""
    draw = SAMPLE_PRODUCTS["teapot-teal"][2]
    views = [product_photo(draw, angle, 900, seed=angle) for angle in (0, 1, 2)]
    small = Image.new("RGB", (900, 900), (238, 236, 232))
    small.paste(product_photo(draw, 0, 260, seed=9).resize((260, 260)), (320, 320))
    photos = {
        "front.jpg": views[0],
        "side.jpg": views[1],
        "back.jpg": views[2],
        "shaky.jpg": _blurred(product_photo(draw, 1, 900, seed=5), 2.5),
        "front-again.jpg": _near_copy(views[0]),
        "far.jpg": small,
    }
    records = []
    for name, image in photos.items():
        path = tmp_path / name
        image.save(path, quality=95)
        records.append(PhotoRecord(file=name, sha256="0" * 64, bytes=1, format="JPEG", width=900,
                                   height=900, local_path=path))  # fmt: skip
    return records


def test_a_poor_photo_set_says_which_photos_to_retake_and_why(tmp_path):
    cleaned, problems = cleaning.clean_photos(_photo_set(tmp_path), cleaning.GrabCutCleaner(), tmp_path / "c")
    assert not problems
    advice = {c.source: c.advice for c in cleaned}
    assert advice["front.jpg"] == advice["side.jpg"] == advice["back.jpg"] == []
    assert photo_advice.BLURRED in advice["shaky.jpg"]
    assert advice["front-again.jpg"] == [photo_advice.SAME_VIEW.format(other="front.jpg")]
    assert photo_advice.SMALL in advice["far.jpg"]
    verdict = photo_advice.set_advice(cleaned)
    assert verdict.usable_views == 3 and verdict.enough
    assert verdict.retake == ["shaky.jpg", "front-again.jpg", "far.jpg"]
    # Two good views and their copies: not enough different views, and the page's words say which to retake.
    few = photo_advice.set_advice([c for c in cleaned if c.source not in {"back.jpg"}])
    assert few.usable_views == 2 and not few.enough
    # Cleaned photos carry their measures for the manifest.
    front = next(c for c in cleaned if c.source == "front.jpg")
    assert front.blur < photo_advice.MAX_BLUR and front.product_share > 0.5 and len(front.phash) == 16


def test_measures_on_plain_arrays():
    flat = Image.new("RGB", (200, 200), (120, 120, 120))
    assert photo_advice.blur(flat, Image.new("L", (200, 200), 255)) == 1.0  # no edge at all
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8))
    assert photo_advice.blur(noise, Image.new("L", (200, 200), 255)) < 0.2
    a = photo_advice.perceptual_hash(noise)
    assert photo_advice.hash_distance(a, a) == 0
    assert (
        photo_advice.hash_distance(
            a, photo_advice.perceptual_hash(noise.transpose(Image.Transpose.ROTATE_90))
        )
        > 12
    )


@pytest.mark.skipif(not DREAMBENCH.is_dir(), reason="the DreamBench photos are not beside this checkout")
def test_the_thresholds_hold_on_the_dreambench_photos():
    """Sharp, varied real photos pass; blurred and near-duplicated copies of them are flagged."""
    for product in sorted(p for p in DREAMBENCH.iterdir() if p.is_dir()):
        hashes = []
        for path in sorted(product.glob("*.jpg")):
            image = Image.open(path).convert("RGB")
            whole = Image.new("L", image.size, 255)
            assert photo_advice.blur(image, whole) <= photo_advice.MAX_BLUR, path
            for pixels in (1.5, 2.0, 3.0):
                assert photo_advice.blur(_blurred(image, pixels), whole) > photo_advice.MAX_BLUR, path
            hashes.append(photo_advice.perceptual_hash(image))
            copy = photo_advice.perceptual_hash(_near_copy(image))
            assert photo_advice.hash_distance(hashes[-1], copy) <= photo_advice.DUPLICATE_BITS + 2, path
        for a, b in itertools.combinations(hashes, 2):
            assert photo_advice.hash_distance(a, b) > photo_advice.DUPLICATE_BITS, product.name
