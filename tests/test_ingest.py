import io
import json

import pytest
from PIL import Image

from product_studio import ingest
from product_studio.devkit.samples import SAMPLE_PRODUCTS, product_photo


def _jpeg(size=300) -> bytes:
    buf = io.BytesIO()
    product_photo(SAMPLE_PRODUCTS["vase-ochre"][2], 0, size).save(buf, format="JPEG")
    return buf.getvalue()


def _snapshot(store):
    return {key: store.read(key) for key in store.list()}


def test_catalogue_must_be_marked_ready(buckets):
    incoming, _ = buckets
    incoming.write("cat1/sku1/product.json", b'{"class_noun": "vase"}')
    with pytest.raises(ingest.IngestError, match=r"catalogue 'cat1' is not ready: .*cat1/catalogue.json"):
        ingest.list_skus(incoming, "cat1")
    incoming.write("cat1/catalogue.json", b"{}")
    incoming.write("cat1/sku2/photos/a.jpg", _jpeg())
    assert ingest.list_skus(incoming, "cat1") == ["sku1", "sku2"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, r"SKU 's1': s3://.*/c/s1/product.json is missing"),
        (b"{not json", "is not valid JSON"),
        (b"[1, 2]", "must hold a JSON object, got list"),
        (b'{"title": "x"}', "field class_noun: Field required"),
        (b'{"class_noun": "t3apot!"}', r"class_noun must be .* got 't3apot!'"),
        (b'{"class_noun": "teapot", "scene": ["snow"]}', "field scene: Extra inputs are not permitted"),
    ],
)
def test_invalid_product_json_is_named(buckets, body, message):
    incoming, _ = buckets
    if body is not None:
        incoming.write("c/s1/product.json", body)
    with pytest.raises(ingest.IngestError, match=message):
        ingest.load_product_spec(incoming, "c", "s1")


def test_product_json_normalises_class_noun(buckets):
    incoming, _ = buckets
    incoming.write(
        "c/s1/product.json", json.dumps({"class_noun": "  Tea  Pot ", "scenes": ["oak-table"]}).encode()
    )
    spec = ingest.load_product_spec(incoming, "c", "s1")
    assert spec.class_noun == "tea pot" and spec.scenes == ["oak-table"]


def test_bad_photos_are_reported_per_file_and_originals_untouched(buckets, tmp_path):
    incoming, _ = buckets
    good = _jpeg()
    incoming.write("c/s1/photos/good1.jpg", good)
    incoming.write("c/s1/photos/good2.JPG", good)
    incoming.write("c/s1/photos/truncated.jpg", good[: len(good) // 2])
    incoming.write("c/s1/photos/notes.txt", b"hello")
    incoming.write("c/s1/photos/fake.png", b"\x89PNG\r\n\x1a\n garbage")
    incoming.write("c/s1/photos/tiny.png", _png(40))
    incoming.write("c/s1/photos/gif.webp", _gif())
    before = _snapshot(incoming)

    photos, problems = ingest.load_sku_photos(incoming, "c", "s1", tmp_path, min_side=256)

    assert [p.file for p in photos] == ["good1.jpg", "good2.JPG"]
    assert photos[0].width == 300 and photos[0].format == "JPEG" and len(photos[0].sha256) == 64
    assert photos[0].local_path.read_bytes() == good
    reasons = {p.file: p.reason for p in problems}
    assert set(reasons) == {"truncated.jpg", "notes.txt", "fake.png", "tiny.png", "gif.webp"}
    assert "truncated.jpg: corrupt or unreadable image" in reasons["truncated.jpg"]
    assert "notes.txt: not a photo file" in reasons["notes.txt"]
    assert "40x40 px is too small" in reasons["tiny.png"]
    assert "content is GIF" in reasons["gif.webp"]
    assert _snapshot(incoming) == before  # nothing the seller uploaded is changed


def test_oversized_photo_is_refused_before_download(buckets, tmp_path):
    incoming, _ = buckets
    incoming.write("c/s1/photos/big.jpg", _jpeg())
    photos, problems = ingest.load_sku_photos(incoming, "c", "s1", tmp_path, max_bytes=100)
    assert not photos and "over the 100-byte limit" in problems[0].reason


def test_ids_are_validated():
    with pytest.raises(ingest.IngestError, match=r"SKU '../etc' is not a valid id"):
        ingest.check_id("SKU", "../etc")


def _png(side):
    buf = io.BytesIO()
    Image.new("RGB", (side, side), "red").save(buf, format="PNG")
    return buf.getvalue()


def _gif():
    buf = io.BytesIO()
    Image.new("RGB", (300, 300), "blue").save(buf, format="GIF")
    return buf.getvalue()


def test_product_spec_preset_is_checked():
    from product_studio.ingest import ProductSpec

    assert ProductSpec(class_noun="mug", training_preset="fine-detail").training_preset == "fine-detail"
    with pytest.raises(ValueError, match="unknown training preset 'shiny'"):
        ProductSpec(class_noun="mug", training_preset="shiny")
    # product.json files from before the rename say "preset": read the same way, checked the same way.
    assert ProductSpec.model_validate({"class_noun": "mug", "preset": "quick"}).training_preset == "quick"
    with pytest.raises(ValueError, match="unknown training preset 'shiny'"):
        ProductSpec.model_validate({"class_noun": "mug", "preset": "shiny"})


def test_product_json_names_the_trainers_presets():
    # ingest checks the names against records.TRAINING_PRESETS (it does not import the trainer): the same set.
    from product_studio.records import TRAINING_PRESETS
    from product_studio.training.presets import PRESETS

    assert set(TRAINING_PRESETS) == set(PRESETS)


def test_product_spec_names_card_formats_and_reads_the_old_marketplaces_field():
    from product_studio.ingest import ProductSpec

    spec = ProductSpec.model_validate({"class_noun": "mug", "card_formats": ["ebay-square"]})
    assert spec.card_formats == ["ebay-square"]
    old = ProductSpec.model_validate({"class_noun": "mug", "marketplaces": ["ebay-square", "amazon-main"]})
    assert old.card_formats == ["ebay-square", "amazon-main"]
    with pytest.raises(ValueError, match="listed more than once"):
        ProductSpec.model_validate({"class_noun": "mug", "marketplaces": ["ebay-square", "ebay-square"]})


def test_a_card_record_from_an_old_manifest_reads_without_its_preset_alias():
    from product_studio.records import CardRecord

    card = {
        "file": "runs/r/cards/ebay-square.jpg", "format": "ebay-square", "preset": "ebay-square",
        "width": 1600, "height": 1600, "kind": "cutout", "scores": {},
        "render": {"mode": "cutout"},
        "compliance": {"format": "ebay-square", "passed": True, "checks": {}},
    }  # fmt: skip
    record = CardRecord.model_validate(card)
    assert record.format == "ebay-square" and "preset" not in record.model_dump()
