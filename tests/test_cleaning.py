import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from product_studio import cleaning
from product_studio.devkit.samples import SAMPLE_PRODUCTS, product_photo
from product_studio.records import PhotoRecord, SkuFailed, SkuOutcome


def _photo(tmp_path, name="p.jpg", exif_rotate=False):
    image = product_photo(SAMPLE_PRODUCTS["backpack-red"][2], 1, 320, seed=1)
    path = tmp_path / name
    if exif_rotate:
        exif = Image.Exif()
        exif[0x0112] = 6  # camera held sideways: the viewer must rotate 90 degrees clockwise
        image.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)
    else:
        image.save(path)
    return path


def _red_share(cutout: Image.Image) -> float:
    a = np.asarray(cutout.convert("RGBA")).astype(int)
    product = a[a[:, :, 3] >= 128]
    return float(((product[:, 0] > 150) & (product[:, 1] < 80)).mean())


def test_grabcut_cuts_out_the_product(tmp_path):
    cleaned = cleaning.clean_photo(
        _photo(tmp_path), cleaning.make_cleaner("grabcut"), tmp_path / "out", size=256
    )
    cut = Image.open(cleaned.cutout_path)
    assert cut.mode == "RGBA" and cut.size == (256, 256)
    assert 0.05 < cleaned.coverage < 0.5
    assert _red_share(cut) > 0.6  # the kept pixels are the red backpack, not the background
    alpha = np.asarray(cut.getchannel("A"))
    assert alpha[:8].max() == 0 and alpha[-8:].max() == 0  # centred with a transparent margin


def test_exif_orientation_is_applied(tmp_path):
    upright = cleaning.clean_photo(_photo(tmp_path), cleaning.GrabCutCleaner(), tmp_path / "a", size=128)
    turned = cleaning.clean_photo(
        _photo(tmp_path, "t.jpg", exif_rotate=True), cleaning.GrabCutCleaner(), tmp_path / "b", size=128
    )
    a = np.asarray(Image.open(upright.cutout_path).getchannel("A"), float)
    b = np.asarray(Image.open(turned.cutout_path).getchannel("A"), float)
    assert np.abs(a - b).mean() < 20  # same silhouette, same way up


def test_photo_without_a_product_is_a_clear_error(tmp_path):
    path = tmp_path / "wall.png"
    Image.new("RGB", (300, 300), (90, 140, 200)).save(path)
    with pytest.raises(cleaning.CleaningError, match="wall.png: the photo is blank"):
        cleaning.clean_photo(path, cleaning.GrabCutCleaner(), tmp_path)


def test_mask_filling_the_whole_search_area_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 255, (240, 240, 3), dtype=np.uint8)).save(path)
    with pytest.raises(
        cleaning.CleaningError, match="noise.png: .*(could not be told apart from the background|kept)"
    ):
        cleaning.clean_photo(path, cleaning.GrabCutCleaner(), tmp_path)


def test_rembg_with_a_custom_onnx_model(tmp_path, monkeypatch):
    """rembg's real session and remove() path, with a tiny ONNX model built here (no download)."""
    import onnx
    from onnx import TensorProto, helper

    home = tmp_path / "rembg-home"
    home.mkdir()
    monkeypatch.setenv("REMBG_HOME", str(home))
    # Saliency = mean channel value: a bright product on a dark background is the foreground.
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["mask"], axes=[1], keepdims=1)],
        "brightness",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 320, 320])],
    )
    model_path = home / "brightness.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model_path)

    photo = Image.new("RGB", (300, 300), (10, 10, 10))
    photo.paste((250, 250, 250), (100, 80, 200, 240))
    path = tmp_path / "bright.png"
    photo.save(path)
    cleaner = cleaning.make_cleaner(f"rembg-onnx:{model_path}")
    assert cleaner.name == f"rembg-onnx:{model_path}"
    cleaned = cleaning.clean_photo(path, cleaner, tmp_path / "out", size=200)
    assert cleaned.coverage == pytest.approx(100 * 160 / 300**2, abs=0.03)


def test_a_custom_is_net_style_model_runs_in_rembgs_dis_session(tmp_path, monkeypatch):
    """Issue 20 #4: ``rembg-onnx:dis:<path>`` runs the model with IS-Net's 1024-px preprocessing; the same
    file under the default U^2-Net session (320 px) cannot run at all."""
    import onnx
    from onnx import TensorProto, helper

    home = tmp_path / "rembg-home"
    home.mkdir()
    monkeypatch.setenv("REMBG_HOME", str(home))
    # IS-Net's interface: a fixed 1024 x 1024 input, side outputs of which rembg reads the first.
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["d0"], axes=[1], keepdims=1),
            helper.make_node("Identity", ["d0"], ["d1"]),
        ],
        "tiny-isnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 1024, 1024])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, 1024, 1024]) for n in ("d0", "d1")],
    )
    model_path = home / "isnet.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model_path)
    photo = Image.new("RGB", (300, 300), (10, 10, 10))
    photo.paste((250, 250, 250), (100, 80, 200, 240))
    path = tmp_path / "bright.png"
    photo.save(path)

    cleaner = cleaning.make_cleaner(f"rembg-onnx:dis:{model_path}")
    assert cleaner.name == f"rembg-onnx:dis:{model_path}"
    assert type(cleaner._session).__name__ == "DisCustomSession"
    cleaned = cleaning.clean_photo(path, cleaner, tmp_path / "out", size=200)
    assert cleaned.coverage == pytest.approx(100 * 160 / 300**2, abs=0.03)
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # U^2-Net's 320 px: not this model
        cleaning.make_cleaner(f"rembg-onnx:{model_path}").mask(photo)
    assert type(cleaning.make_cleaner(f"rembg-onnx:ben:{model_path}")._session).__name__ == "BenCustomSession"


@pytest.mark.parametrize("kind", ["birefnet", "isnet"])
def test_an_unknown_kind_of_custom_model_names_the_setting(kind, tmp_path, monkeypatch):
    from pydantic import ValidationError

    from product_studio.settings import Settings, describe_settings_error

    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    monkeypatch.setenv("PRODUCT_STUDIO_CLEANER", f"rembg-onnx:{kind}:{model}")
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = describe_settings_error(caught.value)
    assert message.startswith(f"PRODUCT_STUDIO_CLEANER=rembg-onnx:{kind}:{model}: ")
    assert f"'{kind}' is not a kind of custom rembg model" in message and "ben, dis, u2net" in message


def test_rembg_custom_model_must_be_in_rembg_home(tmp_path, monkeypatch):
    monkeypatch.setenv("REMBG_HOME", str(tmp_path / "home"))
    outside = tmp_path / "model.onnx"
    outside.write_bytes(b"x")
    with pytest.raises(ValueError, match="inside REMBG_HOME"):
        cleaning.make_cleaner(f"rembg-onnx:{outside}")


@pytest.mark.parametrize("spec", ["", "rembg", "grabcut:fast", "magic"])
def test_unknown_cleaner_is_refused(spec):
    with pytest.raises(ValueError, match=f"cleaner '{spec}' is not one of"):
        cleaning.make_cleaner(spec)


def test_many_photos_clean_into_cutouts_and_problems_named_by_the_sellers_file(tmp_path):
    good = _photo(tmp_path, "local-0.jpg")
    blank = tmp_path / "local-1.jpg"
    Image.new("RGB", (320, 320), (128, 128, 128)).save(blank)
    photos = [
        PhotoRecord(
            file=name, sha256="0" * 64, bytes=1, format="JPEG", width=320, height=320, local_path=path
        )
        for name, path in (("front.jpg", good), ("side/back.jpg", blank))
    ]
    cutouts, problems = cleaning.clean_photos(photos, cleaning.make_cleaner("grabcut"), tmp_path / "out")
    assert [c.source for c in cutouts] == ["front.jpg"]  # the seller's name, not the local copy's
    assert [p.file for p in problems] == ["side/back.jpg"]
    assert "side/back.jpg: the photo is blank" in problems[0].reason and "local-1" not in problems[0].reason
    # Too few usable photos: the SKU fails with every photo problem, and its outcome keeps them.
    with pytest.raises(SkuFailed, match=r"SKU 'mug-1': only 1 usable photo\(s\) of 2; at least 3") as caught:
        cleaning.require_usable_photos("mug-1", cutouts, problems, uploaded=2, minimum=3)
    outcome = SkuOutcome.failed("cat", "mug-1", caught.value)
    assert outcome.status == "failed" and outcome.problems == problems
    cleaning.require_usable_photos("mug-1", cutouts, problems, uploaded=2, minimum=1)


def _mask(*shapes: tuple[str, tuple[int, int, int, int]], size: int = 200) -> Image.Image:
    from PIL import ImageDraw

    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    for kind, box in shapes:
        (draw.ellipse if kind == "ellipse" else draw.rectangle)(box, fill=255)
    return mask


@pytest.mark.parametrize(
    ("mask", "frame", "expected"),
    [
        (_mask(("ellipse", (50, 40, 150, 170))), 0.0, None),  # one product, clear of the edges
        (_mask(("ellipse", (50, 40, 150, 170)), ("rect", (90, 150, 110, 199))), 0.0, "bottom edge"),  # an arm
        (_mask(("ellipse", (0, 40, 100, 170))), 0.0, "left edge"),  # the product cut off
        # GrabCut never marks its 6% margin: reaching the margin is reaching the edge of what it saw.
        (_mask(("ellipse", (50, 13, 150, 170))), 0.06, "top edge"),
        (_mask(("ellipse", (50, 13, 150, 170))), 0.0, None),
        (_mask(("ellipse", (20, 40, 90, 160)), ("ellipse", (110, 40, 180, 160))), 0.0, "2 large separate"),
    ],
)
def test_a_cutout_unfit_for_composites_is_named_with_the_reason(mask, frame, expected):
    from product_studio import cutout_checks

    problem = cutout_checks.photo_problem(mask, frame)
    assert problem is None if expected is None else expected in problem


def test_an_outline_unlike_the_skus_other_cutouts_is_not_used_for_composites(tmp_path):
    """A cutout that kept the block the product stands on: clear of the edges, one part, another outline."""
    from product_studio import cutout_checks
    from product_studio.records import CleanedPhoto

    shapes = {
        "a.png": [("ellipse", (60, 30, 140, 170))],
        "b.png": [("ellipse", (55, 25, 145, 175))],
        "c.png": [("ellipse", (62, 35, 138, 165))],
        "on-block.png": [("ellipse", (60, 30, 140, 120)), ("rect", (20, 110, 180, 170))],
    }
    cutouts = []
    for name, parts in shapes.items():
        rgba = Image.new("RGBA", (200, 200), (200, 60, 60, 0))
        rgba.putalpha(_mask(*parts))
        rgba.save(tmp_path / name)
        cutouts.append(CleanedPhoto(source=name, cutout_path=tmp_path / name, coverage=0.3))
    judged = cutout_checks.judge_outlines(cutouts)
    unfit = {c.source: c.not_for_composites for c in judged if c.not_for_composites}
    assert list(unfit) == ["on-block.png"] and "outline is unlike the product's" in unfit["on-block.png"]
    assert all(c.outline_match is not None for c in judged)
    assert cutout_checks.judge_outlines(cutouts[:2]) == cutouts[:2]  # two say nothing about each other


def test_a_large_photos_mask_is_refined_to_its_own_outline(tmp_path):
    """GrabCut sees a 2400 px photo at 384 px: scaled up, its edge is several pixels off; refined at the
    photo's resolution (``matting``) it follows the product's true outline."""
    import cv2

    from product_studio.photos import matting

    photo = Image.new("RGB", (2400, 2400), (235, 235, 235))
    truth = Image.new("L", photo.size, 0)
    outline = [(600, 500), (1800, 700), (1700, 1900), (500, 1700)]
    ImageDraw.Draw(photo).polygon(outline, fill=(180, 40, 40))
    ImageDraw.Draw(truth).polygon(outline, fill=255)
    photo = photo.filter(ImageFilter.GaussianBlur(1))  # a lens's soft edge
    cleaner = cleaning.GrabCutCleaner()
    coarse = cleaner.mask(photo)
    fine = matting.refine_mask(photo, coarse, cleaner.work_side)
    inside = (np.asarray(truth) > 0).astype(np.uint8)
    kernel = np.ones((31, 31), np.uint8)
    band = cv2.dilate(inside, kernel) != cv2.erode(inside, kernel)  # 15 px either side of the outline

    def error(mask: Image.Image) -> float:
        return float(np.abs(np.asarray(mask, np.float32) - np.asarray(truth, np.float32))[band].mean())

    assert error(coarse) > 30 and error(fine) < 10
    small = photo.resize((400, 400))
    assert matting.refine_mask(small, coarse.resize((400, 400)), cleaner.work_side) is not None
    unchanged = coarse.resize((400, 400))
    assert matting.refine_mask(small, unchanged, cleaner.work_side) is unchanged  # nothing to refine
    # The cutout keeps the photo's pixels: no 1024 px cap.
    path = tmp_path / "big.png"
    photo.save(path)
    cleaned = cleaning.clean_photo(path, cleaner, tmp_path / "out")
    assert Image.open(cleaned.cutout_path).width > 1300 and cleaned.product_side > 1200
