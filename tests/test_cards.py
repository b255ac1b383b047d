"""Cards: marketplace formats and their rules, cards at their own aspect, and composite cards that show the
seller's exact pixels -- on the tiny SD and SDXL, with a drawn cutout and with a real cleaned photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from product_studio import cleaning
from product_studio.cards import formats, making, planning, quality
from product_studio.devkit.samples import SAMPLE_PRODUCTS, product_photo
from product_studio.identifiers import ProductPrompts
from product_studio.models import load_pipeline
from product_studio.provenance import labels
from product_studio.records import CleanedPhoto
from product_studio.rendering import renderer, scenes
from product_studio.training import TrainConfig, from_cutout, train_lora

REPO_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
PROMPTS = ProductPrompts("olis", "teapot")


def _cutout() -> Image.Image:
    im = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    im.paste((200, 30, 30, 255), (100, 50, 200, 250))
    return im


def _drawn_cutout(path: Path) -> CleanedPhoto:
    """A teapot-ish cutout with soft (anti-aliased) edges and detail inside."""
    big = Image.new("RGBA", (1200, 1200), (0, 0, 0, 0))
    d = ImageDraw.Draw(big)
    d.ellipse((240, 300, 960, 1020), fill=(22, 128, 122, 255))
    d.rectangle((380, 600, 820, 660), fill=(240, 200, 60, 255))
    d.ellipse((520, 200, 680, 330), fill=(14, 90, 86, 255))
    big.resize((400, 400), Image.Resampling.LANCZOS).save(path)
    return CleanedPhoto(source="front.jpg", cutout_path=path, coverage=0.3)


def _real_cutout(tmp_path: Path) -> CleanedPhoto:
    """A sample photo through the real cleaner (GrabCut): a cutout with a real, ragged mask."""
    photo = tmp_path / "photo.jpg"
    product_photo(SAMPLE_PRODUCTS["teapot-teal"][2], 0, 512, seed=3).save(photo)
    return cleaning.clean_photo(photo, cleaning.make_cleaner("grabcut"), tmp_path / "cutouts", size=512)


def _lora(pipe, tmp_path: Path) -> Path:
    config = TrainConfig(steps=1, rank=2, prior_images=0, validation_prompts=[], checkpoint_every=0)
    return train_lora(
        pipe, [from_cutout(_cutout())] * 3, [], prompts=PROMPTS, config=config, out_dir=tmp_path / "lora"
    ).lora_file


def _assert_sellers_pixels(card_path: Path, cutout_path: Path, box: tuple[int, int, int, int]) -> float:
    """The contract: over the cutout's opaque pixels (2 px in from the edge) the card is the Lanczos-scaled
    cutout, up to JPEG error; returns the mean absolute difference."""
    card = np.asarray(Image.open(card_path).convert("RGB"), np.float32)
    cutout = Image.open(cutout_path).convert("RGBA")
    bbox = cutout.getchannel("A").point(lambda v: 255 if v >= 128 else 0).getbbox()
    left, top, right, bottom = box
    scaled = cutout.crop(bbox).resize((right - left, bottom - top), Image.Resampling.LANCZOS)
    opaque = np.asarray(scaled.getchannel("A")) == 255
    inner = opaque.copy()  # 2 px in from the mask edge, where blending is allowed
    for axis in (0, 1):
        for shift in (-2, -1, 1, 2):
            inner &= np.roll(opaque, shift, axis=axis)
    assert inner.sum() > 0.3 * opaque.size
    want = np.asarray(scaled.convert("RGB"), np.float32)[inner]
    got = card[top:bottom, left:right][inner]
    mad = float(np.abs(got - want).mean())
    assert mad <= 4.0, mad
    return mad


# --- formats and their rules ----------------------------------------------------------------------------


def test_formats_are_real_marketplace_formats_and_old_ids_still_work():
    f = formats.FORMATS
    assert (f["amazon-main"].width, f["amazon-main"].min_fill, f["amazon-main"].white_background) == (
        2000,
        0.85,
        True,
    )
    assert (f["shopify-square"].width, f["ebay-square"].width, f["ebay-square"].no_borders) == (
        2048,
        1600,
        True,
    )
    assert (f["wildberries-vertical"].width, f["wildberries-vertical"].height) == (1200, 1600)
    assert [x.id for x in formats.select_formats(["main-white", "scene-wide"])] == [
        "amazon-main",
        "banner-16x9",
    ]
    with pytest.raises(formats.FormatError, match=r"unknown marketplace format\(s\) \['ebay'\]"):
        formats.select_formats(["ebay"])
    with pytest.raises(formats.FormatError, match="listed more than once"):
        formats.select_formats(["main-white", "amazon-main"])


def test_main_card_shows_the_real_product_on_pure_white_and_passes_amazons_rules(tmp_path):
    main = formats.FORMATS["amazon-main"]
    card, box = making.compose_cutout_card(main, _cutout())
    assert card.size == (main.width, main.height) and card.mode == "RGB"
    assert max(box[2] - box[0], box[3] - box[1]) == round(main.fill * main.height)
    scores = quality.score_card(card, "cutout", _cutout())
    assert scores["white_background"] == 1.0
    centre = np.asarray(card)[main.height // 2, main.width // 2]
    assert tuple(centre) == (200, 30, 30)  # the seller's own pixels, not a generated product
    card.save(tmp_path / "main.jpg", quality=95)
    result = formats.check_card(main, tmp_path / "main.jpg")
    assert result.passed and set(result.checks) == {
        "size",
        "min_size",
        "file_type",
        "colour",
        "file_size",
        "white_background",
        "fill",
    }


@pytest.mark.parametrize(
    ("format_id", "make", "failed"),
    [
        (
            "amazon-main",
            lambda: Image.new("RGB", (2000, 2000), (240, 240, 240)),
            {"white_background"},
        ),
        ("amazon-main", lambda: _small_product_on_white(), {"fill"}),
        ("amazon-main", lambda: Image.new("RGB", (900, 900), "white"), {"size", "min_size", "fill"}),
        ("ebay-square", lambda: _bordered(), {"no_borders"}),
        (
            "wildberries-vertical",
            lambda: Image.new("RGBA", (1200, 1600), (9, 9, 9, 128)),
            {"file_type", "colour"},
        ),
        ("ozon-vertical", lambda: _noise((1200, 1600)), {"file_size"}),
    ],
)
def test_compliance_fails_a_card_that_breaks_its_formats_rules(tmp_path, format_id, make, failed):
    card_format = formats.FORMATS[format_id]
    if format_id == "ozon-vertical":
        card_format = card_format.model_copy(update={"max_bytes": 100_000})
    image = make()
    path = tmp_path / ("card.png" if image.mode == "RGBA" else "card.jpg")
    image.save(path)
    result = formats.check_card(card_format, path)
    assert not result.passed and {k for k, ok in result.checks.items() if not ok} == failed
    assert len(result.problems) == len(failed)


def _small_product_on_white() -> Image.Image:
    im = Image.new("RGB", (2000, 2000), "white")
    im.paste((200, 30, 30), (900, 900, 1100, 1100))
    return im


def _bordered() -> Image.Image:
    im = _noise((1600, 1600))
    ImageDraw.Draw(im).rectangle((0, 0, 1599, 1599), outline=(0, 0, 0), width=20)
    return im


def _noise(size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), np.uint8))


def test_render_sizes_keep_each_cards_aspect(tiny_pipe, tiny_sdxl_model):
    sdxl = load_pipeline(str(tiny_sdxl_model))
    for f in formats.FORMATS.values():
        for pipe in (tiny_pipe, sdxl):
            w, h = renderer.render_size(pipe, f.width, f.height)
            assert w % 8 == 0 and h % 8 == 0
            assert abs(w * h / 64**2 - 1) < 0.35  # about the model's native pixel count
            assert abs(np.log(w / h / f.aspect)) < 0.2  # the card's aspect, never a square to crop
    # SDXL renders on its trained buckets: 3:4 -> 896 x 1152 at 1024 px native.
    assert renderer.render_size(sdxl, 1200, 1600) == (56, 72)  # 896 x 1152 scaled to the tiny 64 px


# --- composite cards: the seller's exact pixels ---------------------------------------------------------


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_composite_cards_show_the_sellers_exact_pixels(
    family, tiny_model, tiny_sdxl_model, tmp_path, sellers_product_kept
):
    pipe = load_pipeline(str(tiny_model if family == "sd" else tiny_sdxl_model))
    lora = _lora(pipe, tmp_path)
    drawn = _drawn_cutout(tmp_path / "drawn.png")
    plan = planning.plan_cards(
        ["amazon-main", "wildberries-vertical", "banner-16x9"],
        ["oak-table", "in-hand"],
        default_formats=[],
        default_scenes=[],
        templates_dir=REPO_TEMPLATES,
    )
    segment = cleaning.make_cleaner("grabcut").mask
    made = making.make_cards(
        plan,
        [drawn],
        tmp_path / "cards",
        pipe=pipe,
        prompts=PROMPTS,
        lora_file=lora,
        segment=segment,
        steps=2,
    )
    assert [c.reason for c in made if c.status == "rejected"] == [
        "ranked 2 of 2; the best 1 are published"
    ] * 2
    made = [
        c for c in made if c.status == "published"
    ]  # in-hand renders 2 candidates; without scores, #0 wins
    by_name = {Path(c.file).stem: c for c in made}
    assert set(by_name) == {
        "amazon-main",
        "wildberries-vertical--oak-table",
        "banner-16x9--oak-table",
        "wildberries-vertical--in-hand",
        "banner-16x9--in-hand",
    }
    for card in made:
        f = formats.FORMATS[card.format]
        assert (card.width, card.height) == (f.width, f.height) and card.compliance.format == f.id
        # Every card's file names how it was made (tests/test_provenance.py reads the labels back).
        assert card.compliance.checks["label"] and not card.provenance.c2pa
        assert card.provenance.digital_source_type == labels.TERM_FOR_MODE[card.render.mode]
        if card.render.mode == "generate":
            assert card.product is None and card.render.upscaler == "lanczos"
            continue
        assert card.product is not None and card.product.cutout == "cutouts/drawn.png"
        if card.render.mode == "cutout":
            _assert_sellers_pixels(card.local_path, drawn.cutout_path, card.product.box)
        else:  # oak-table relights its product for the scene (or keeps the photo's light, and says why)
            light = card.render.light
            assert light.requested == "match" and (light.mode == "match") == (light.fallback is None)
            cutout = Image.open(drawn.cutout_path)
            sellers_product_kept(card.local_path, cutout, card.product.box, light.mode)
            assert card.render.shadow in {"model", "drawn"} and "detail_kept" in card.scores
        if card.render.mode == "composite":
            w, h = card.render.size
            assert abs(np.log(w / h / f.aspect)) < 0.2 and "object_expansion" in card.scores
    assert by_name["amazon-main"].render.mode == "cutout" and by_name["amazon-main"].compliance.passed


def test_composite_of_a_real_cleaned_photo_keeps_its_pixels(tiny_pipe, tmp_path):
    real = _real_cutout(tmp_path)
    template = scenes.load_library(REPO_TEMPLATES)["marble-counter"].model_copy(update={"light": "keep"})
    with renderer.product_lora(tiny_pipe, _lora(tiny_pipe, tmp_path)):
        renders = renderer.render_scene_cards(
            tiny_pipe, template, PROMPTS, Image.open(real.cutout_path), (1200, 1600), steps=2
        )
    (render,) = renders
    path = tmp_path / "card.jpg"
    render.image.save(path, quality=95)
    assert render.image.size == (1200, 1600) and render.placed is not None
    _assert_sellers_pixels(path, real.cutout_path, render.placed.box)
    # The product stands where the template says: its base on the floor line, centred.
    left, _, right, bottom = render.placed.box
    assert bottom == round(template.placement.floor * 1600) and abs((left + right) / 2 - 600) <= 1


def test_object_expansion_score_sees_the_product_growing_into_the_background():
    placed = Image.new("L", (400, 400), 0)
    ImageDraw.Draw(placed).rectangle((150, 150, 250, 250), fill=255)
    grown = placed.copy()
    ImageDraw.Draw(grown).rectangle((250, 150, 350, 250), fill=255)  # the outline continued to the right
    assert quality.object_expansion(placed, placed) == 0.0
    assert quality.object_expansion(grown, placed) == pytest.approx(0.9, abs=0.1)


def test_a_dedicated_inpainting_checkpoint_takes_the_product_lora(tiny_pipe, tmp_path):
    from flows.cli import main
    from product_studio.models import ModelLoadError

    folder = tmp_path / "tiny-inpaint"
    assert main(["tiny-model", str(folder), "--family", "sd-inpaint"]) == 0
    inpainter = load_pipeline(str(folder), kind="inpainting")
    assert inpainter.unet.config.in_channels == 9
    with pytest.raises(ModelLoadError, match="is a StableDiffusionInpaintPipeline; Product Studio trains"):
        load_pipeline(str(folder))  # not a text-to-image model: refused by name
    drawn = _drawn_cutout(tmp_path / "drawn.png")
    plan = planning.plan_cards(
        ["ozon-vertical"],
        ["studio-white"],
        default_formats=[],
        default_scenes=[],
        templates_dir=REPO_TEMPLATES,
    )
    lora = _lora(tiny_pipe, tmp_path)
    options = {"pipe": tiny_pipe, "prompts": PROMPTS, "lora_file": lora, "inpainter_name": str(folder)}
    (card,) = making.make_cards(plan, [drawn], tmp_path / "cards", inpainter=inpainter, steps=2, **options)
    assert card.render.mode == "composite" and card.render.inpainter == str(folder)
    _assert_sellers_pixels(card.local_path, drawn.cutout_path, card.product.box)
    assert not getattr(inpainter.unet, "peft_config", None)  # the LoRA is unloaded afterwards


def test_a_configured_upscaler_scales_renders_up_and_is_recorded(tiny_pipe, tmp_path, sellers_product_kept):
    from flows.cli import main

    folder = tmp_path / "tiny-x4"
    assert main(["tiny-model", str(folder), "--family", "sd-x4-upscaler"]) == 0
    calls: list[tuple[int, int]] = []

    class Counting(renderer.Upscaler):  # the real upscaler, counting the renders it scales up
        def __call__(self, image, prompt, seed):
            calls.append(image.size)
            return super().__call__(image, prompt, seed)

    upscaler = Counting(load_pipeline(str(folder), kind="upscaling"), "tiny-x4", steps=2)
    drawn = _drawn_cutout(tmp_path / "drawn.png")
    plan = planning.plan_cards(
        ["ebay-square"],
        ["oak-table", "in-hand"],
        default_formats=[],
        default_scenes=[],
        templates_dir=REPO_TEMPLATES,
    )
    options = {"pipe": tiny_pipe, "prompts": PROMPTS, "lora_file": _lora(tiny_pipe, tmp_path)}
    made = making.make_cards(plan, [drawn], tmp_path / "cards", upscaler=upscaler, steps=2, **options)
    assert len(calls) == 3 and set(calls) == {(64, 64)}  # one composite, two generated candidates
    made = [c for c in made if c.status == "published"]
    assert [c.render.upscaler for c in made] == ["tiny-x4", "tiny-x4"]
    assert all((c.width, c.height) == (1600, 1600) for c in made)
    composite = next(c for c in made if c.render.mode == "composite")
    light = composite.render.light.mode
    sellers_product_kept(composite.local_path, Image.open(drawn.cutout_path), composite.product.box, light)
    # The x4 upscaler really ran: its output is 4x the render, before the last Lanczos step.
    render = Image.new("RGB", (64, 64), (90, 120, 150))
    assert upscaler(render, "a photo", 0).size == (256, 256)


def _red_on_green(size: int) -> tuple[Image.Image, Image.Image]:
    """A red disc photographed on a green wall, its edge soft (drawn 4x larger, scaled down); its matte."""
    big = size * 4
    photo, matte = Image.new("RGB", (big, big), (40, 170, 60)), Image.new("L", (big, big), 0)
    box = (big // 5, big // 5, big * 4 // 5, big * 4 // 5)
    ImageDraw.Draw(photo).ellipse(box, fill=(210, 30, 30))
    ImageDraw.Draw(matte).ellipse(box, fill=255)
    return (
        photo.resize((size, size), Image.Resampling.LANCZOS),
        matte.resize((size, size), Image.Resampling.LANCZOS),
    )


def test_the_main_cards_edge_keeps_none_of_the_old_backgrounds_colour(tmp_path):
    photo, matte = _red_on_green(300)
    cutout = photo.convert("RGBA")
    cutout.putalpha(matte)
    main = formats.FORMATS["amazon-main"]
    card, _ = making.compose_cutout_card(main, cutout)
    placed = renderer.place_product(cutout, card.size, scenes.Placement(scale=main.fill, anchor="center"))
    naive = Image.new("RGBA", card.size, "white")
    naive.alpha_composite(placed.layer)  # what the card was before: the edge pixels as photographed

    # The soft edge: partly transparent pixels of the placed product, where green could show on white.
    alpha = np.asarray(placed.layer.getchannel("A"))
    edge = (alpha > 20) & (alpha < 235)

    def green(image: Image.Image) -> float:  # green over blue: 0 for red on white, > 0 with the wall in it
        rgb = np.asarray(image.convert("RGB")).astype(float)
        return float((rgb[..., 1] - rgb[..., 2])[edge].mean())

    assert green(naive) > 10  # the fringe is there without cleaning
    assert green(card) < 3, green(card)
    # Only the soft edge's colours change: the opaque pixels and the matte are the seller's.
    before, after = np.asarray(cutout), np.asarray(cleaning.clean_edge_colours(cutout))
    opaque = before[..., 3] == 255
    assert np.array_equal(after[opaque], before[opaque]) and np.array_equal(after[..., 3], before[..., 3])


def test_a_3000_px_photo_makes_main_images_with_no_enlargement(tmp_path):
    """The contract: amazon-main from a photo of >= 3000 px passes every rule with the product at >= 1:1
    (the cutout keeps the photo's pixels); walmart-main's 2200 px passes too."""
    path = tmp_path / "phone.jpg"
    product_photo(SAMPLE_PRODUCTS["teapot-teal"][2], 2, 3000, seed=3).save(path, quality=95)
    cleaned = cleaning.clean_photo(path, cleaning.make_cleaner("grabcut"), tmp_path / "cutouts")
    plan = planning.CardPlan(
        formats=[formats.FORMATS["amazon-main"], formats.FORMATS["walmart-main"]], templates=[]
    )
    amazon, walmart = making.make_cards(plan, [cleaned], tmp_path / "cards")
    assert amazon.compliance.passed and amazon.compliance.enlargement <= 1.0, amazon.compliance
    assert walmart.compliance.passed and (walmart.width, walmart.height) == (2200, 2200), walmart.compliance
    assert walmart.compliance.checks["white_background"] and walmart.compliance.checks["source_pixels"]


def test_a_main_image_enlarged_past_the_photos_detail_fails_and_says_by_how_much(tmp_path):
    small, big = tmp_path / "small.jpg", tmp_path / "big.jpg"
    for path, size in ((small, 384), (big, 2000)):
        product_photo(SAMPLE_PRODUCTS["teapot-teal"][2], 0, size, seed=3).save(path, quality=95)
    cleaner = cleaning.make_cleaner("grabcut")
    plan = planning.CardPlan(formats=[formats.FORMATS["amazon-main"]], templates=[])
    for path, passes in ((small, False), (big, True)):
        cleaned = cleaning.clean_photo(path, cleaner, tmp_path / path.stem)
        assert 0.3 * Image.open(path).width < cleaned.product_side < Image.open(path).width
        (card,) = making.make_cards(plan, [cleaned], tmp_path / f"cards-{path.stem}")
        side = max(card.product.box[2] - card.product.box[0], card.product.box[3] - card.product.box[1])
        cutout_side = max(
            np.ptp(np.nonzero(np.asarray(Image.open(cleaned.cutout_path))[..., 3] >= 128), axis=1)
        )
        used = min(cleaned.product_side, cutout_side + 1)  # the card is made from the smaller of the two
        assert card.compliance.enlargement == pytest.approx(side / used, abs=0.02)
        assert card.compliance.checks["source_pixels"] is passes, card.compliance.problems
    assert card.compliance.passed  # the 2000-px photo: every rule of amazon-main met
    small_card = making.make_cards(
        plan, [cleaning.clean_photo(small, cleaner, tmp_path / "again")], tmp_path / "c"
    )
    assert "the seller's photo was enlarged" in small_card[0].compliance.problems[-1]


def test_a_preview_makes_every_card_that_needs_no_lora_and_the_same_pixels_with_it_loaded(
    tiny_pipe, tmp_path
):
    """Issue 37: main images and composites need no LoRA (the seller's pixels), generate scenes do; a
    composite made before training is byte for byte the one made with the LoRA loaded (scale 0)."""
    drawn = _drawn_cutout(tmp_path / "drawn.png")
    plan = planning.plan_cards(
        ["amazon-main", "ebay-square"],
        ["studio-white", "in-hand"],
        default_formats=[],
        default_scenes=[],
        templates_dir=REPO_TEMPLATES,
    )
    first, rest = plan.preview(), plan.after_training()
    assert [t.id for t in first.templates] == ["studio-white"] and [t.id for t in rest.templates] == [
        "in-hand"
    ]
    assert [f.id for f in first.formats] == ["amazon-main", "ebay-square"] and [
        f.id for f in rest.formats
    ] == ["ebay-square"]
    assert rest.card_names() == ["ebay-square--in-hand"]
    options = {"pipe": tiny_pipe, "prompts": PROMPTS, "steps": 2}
    with pytest.raises(ValueError, match=r"\['in-hand'\] render with the product's LoRA: train it first"):
        making.make_cards(plan, [drawn], tmp_path / "none", **options)
    early = making.make_cards(first, [drawn], tmp_path / "early", **options)
    assert [c.render.mode for c in early] == ["cutout", "composite"]
    lora = _lora(tiny_pipe, tmp_path)
    later = making.make_cards(first, [drawn], tmp_path / "later", lora_file=lora, **options)
    for before, after in zip(early, later, strict=True):
        assert before.local_path.read_bytes() == after.local_path.read_bytes(), before.file
    # A template may ask for the LoRA: then it waits for training.
    asking = plan.model_copy(
        update={"templates": [t.model_copy(update={"needs_lora": True}) for t in plan.templates]}
    )
    assert asking.preview().templates == [] and [f.id for f in asking.preview().formats] == ["amazon-main"]
