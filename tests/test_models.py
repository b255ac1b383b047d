"""How models are named where the world reads it."""

from __future__ import annotations

import shutil

import pytest


def test_public_files_name_a_base_model_never_by_its_server_path(tiny_model, tmp_path):
    from product_studio.models import public_model_name, public_tool_name

    assert public_model_name("stable-diffusion-v1-5/stable-diffusion-v1-5") == (
        "stable-diffusion-v1-5/stable-diffusion-v1-5"
    )
    assert public_model_name(str(tiny_model)) == "a local Stable Diffusion model"
    snapshot = tmp_path / "hub" / "models--acme--shop-sd" / "snapshots" / "0123abc"
    shutil.copytree(tiny_model, snapshot)
    assert public_model_name(str(snapshot)) == "acme/shop-sd"  # a cached copy of a hub model
    tuned = tmp_path / "tuned"
    shutil.copytree(tiny_model, tuned)
    (tuned / "README.md").write_text("---\nbase_model: stabilityai/sdxl-turbo\nlicense: mit\n---\n# ours\n")
    assert public_model_name(str(tuned)) == "a fine-tune of stabilityai/sdxl-turbo"
    (tuned / "README.md").write_text("---\nbase_model: /srv/models/secret\n---\n")  # a path is no name
    assert public_model_name(str(tuned)) == "a local Stable Diffusion model"
    assert public_tool_name("rembg-onnx:u2net:/srv/models/u2net.onnx") == "rembg-onnx:u2net"
    assert public_tool_name("rembg:birefnet-general") == "rembg:birefnet-general"
    assert public_tool_name("grabcut") == "grabcut"


# A model card's front matter, in the spellings found on the hub; True: non-commercial.
LICENCE_CARDS = [
    ("---\nlicense: cc-by-nc-4.0\n---\n# x\n", True),
    ("---\nlicense: CC BY-NC 4.0\n---\n", True),  # Creative Commons' own short form
    ("\n---\nlicense: cc-by-nc-4.0\n---\n", True),  # after a leading blank line
    ("\ufeff---\nlicense: cc-by-nc-4.0\n---\n", True),  # after a UTF-8 BOM
    ("---\r\nlicense: CC-BY-NC-SA-4.0\r\n---\r\n", True),
    ("---\nlicense: cc_by_nc_nd_4.0\n---\n", True),
    ("---\nlicense: other\nlicense_name: flux-non-commercial-license\n---\n", True),
    ("---\nlicense: other\nlicense_name: flux-1-dev-non-commercial-license\n---\n", True),
    ("---\nlicense:\n- apache-2.0\n- cc-by-nc-4.0\n---\n", True),
    ("---\nlicense: apache-2.0\n---\n", False),
    ("---\nlicense: CC BY 4.0\n---\n", False),
    ("---\nlicense: creativeml-openrail-m\n---\n", False),
    ("---\nlicense: other\nlicense_name: acme-commercial-licence\n---\n", False),
    ("# a card without front matter\n", False),
]
PIXEL_MODEL_VARIABLES = ["BASE_MODEL", "RENDER__INPAINT_MODEL", "RENDER__UPSCALER"]


def _model_folder(path, card: str):
    path.mkdir(parents=True)
    (path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (path / "README.md").write_bytes(card.encode("utf-8"))
    return path


def test_every_licence_spelling_is_read_as_the_hub_reads_it_and_matched_by_its_id(tmp_path):
    """Issue 34 #4: ``CC BY-NC 4.0``, front matter after a blank line or a BOM, ``other`` + ``license_name``:
    the card is read by huggingface_hub's parser, the licence matched by its normalised id."""
    from product_studio.models import check_commercial_use, licence_id, model_licence, noncommercial_reason

    assert licence_id(" CC BY-NC 4.0 ") == licence_id("cc_by_nc_4.0") == "cc-by-nc-4.0"
    for n, (card, noncommercial) in enumerate(LICENCE_CARDS):
        folder = str(_model_folder(tmp_path / f"m{n}", card))
        licence = model_licence(folder)
        assert (noncommercial_reason(folder, licence) is not None) == noncommercial, (card, licence)
        if noncommercial:
            with pytest.raises(ValueError, match="non-commercial"):
                check_commercial_use(folder, allow=False)
    assert model_licence(str(tmp_path / "m1")) == "CC BY-NC 4.0"  # recorded as the card states it
    assert model_licence(str(tmp_path / "m6")) == "flux-non-commercial-license"
    broken = str(_model_folder(tmp_path / "broken", "---\nlicense: [\n---\n"))
    with pytest.raises(ValueError, match="cannot be read"):  # a licence that cannot be read is not trusted
        check_commercial_use(broken, allow=False)


@pytest.mark.parametrize("variable", PIXEL_MODEL_VARIABLES)
def test_every_model_that_makes_card_pixels_is_held_to_the_licence_rule(
    variable, tmp_path, monkeypatch, capsys
):
    """Issue 34 #3 (and #4's spellings for each): the inpainter and upscaler were not checked at all."""
    from flows.cli import main
    from product_studio.settings import Settings

    for n, (card, noncommercial) in enumerate(LICENCE_CARDS[:-1]):
        folder = _model_folder(tmp_path / f"m{n}", card)
        monkeypatch.setenv(f"PRODUCT_STUDIO_{variable}", str(folder))
        assert main(["settings"]) == (2 if noncommercial else 0), card
        err = capsys.readouterr().err
        if noncommercial:
            assert err.count("\n") == 1 and f"PRODUCT_STUDIO_{variable}={folder}: " in err, err
            assert "non-commercial" in err and "PRODUCT_STUDIO_ALLOW_NONCOMMERCIAL_MODELS=true" in err, err
    monkeypatch.setenv("PRODUCT_STUDIO_ALLOW_NONCOMMERCIAL_MODELS", "true")
    assert Settings().pixel_models()  # allowed: the manifest records it, and its cards never go live


def test_the_manifest_records_every_pixel_models_licence_and_any_one_bars_the_cards(tmp_path, make_manifest):
    from product_studio.manifest import Manifest, PixelModelRef

    upscaler = _model_folder(tmp_path / "up", "---\nlicense: CC BY-NC 4.0\n---\n")
    base = make_manifest("sku1").model_dump(by_alias=True)
    commercial = Manifest.model_validate(
        {**base, "models": {"inpainter": {"id": "acme/inpaint", "revision": "main", "license": "mit"}}}
    )
    assert commercial.noncommercial is None
    ref = PixelModelRef(id=str(upscaler), revision="x", license="CC BY-NC 4.0")
    barred = commercial.model_copy(update={"models": {**commercial.models, "upscaler": ref}})
    assert "upscaler" in barred.noncommercial and "CC BY-NC 4.0" in barred.noncommercial
    assert Manifest.model_validate_json(barred.to_json()).models["upscaler"].license == "CC BY-NC 4.0"
