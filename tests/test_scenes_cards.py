from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from product_studio import cards, quality, scenes
from product_studio.identifiers import ProductPrompts
from product_studio.settings import Settings

REPO_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def test_template_library_loads_and_fills():
    library = scenes.load_library(REPO_TEMPLATES)
    assert len(library) >= 3
    assert set(Settings().default_scenes) <= set(library)
    prompt, negative = library["snowy-evening"].fill(ProductPrompts("olis", "teapot"))
    assert "olis teapot" in prompt and "{" not in prompt + negative


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "id: bad\ntitle: t\nprompt: 'a photo of {product} by {owner}'\n",
            r"unknown placeholder\(s\) \['owner'\]",
        ),
        ("id: bad\ntitle: t\nprompt: 'a photo of a teapot'\n", "must contain {product}"),
        ("id: bad\ntitle: t\nprompt: '{product}'\nsteps: 0\n", "field steps"),
        ("id: bad\ntitle: t\nprompt: '{product}'\ncolour: red\n", "field colour: Extra inputs"),
        ("id: other\ntitle: t\nprompt: '{product}'\n", "id 'other' must match the file name 'bad'"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_bad_template_names_file_and_field(tmp_path, body, message):
    (tmp_path / "bad.yaml").write_text(body)
    with pytest.raises(scenes.TemplateError, match=message) as err:
        scenes.load_library(tmp_path)
    assert "bad.yaml" in str(err.value)


def test_unknown_scene_and_preset_ids_are_listed():
    library = scenes.load_library(REPO_TEMPLATES)
    with pytest.raises(scenes.TemplateError, match=r"unknown scene template\(s\) \['moon'\]; available"):
        scenes.select_templates(library, ["moon"])
    with pytest.raises(cards.FormatError, match=r"unknown marketplace format\(s\) \['ebay'\]"):
        cards.select_formats(["ebay"])


def _cutout() -> Image.Image:
    im = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    im.paste((200, 30, 30, 255), (100, 50, 200, 250))
    return im


def test_main_white_card_shows_the_real_product_on_pure_white():
    preset = cards.FORMATS["main-white"]
    card = cards.compose_cutout_card(preset, _cutout())
    assert card.size == (preset.width, preset.height) and card.mode == "RGB"
    scores = quality.score_card(card, "cutout", _cutout())
    assert scores["white_background"] == 1.0
    assert scores["product_fill"] == pytest.approx(preset.fill, abs=0.01)
    centre = np.asarray(card)[preset.height // 2, preset.width // 2]
    assert tuple(centre) == (200, 30, 30)  # the seller's own pixels, not a generated product


@pytest.mark.parametrize("preset_id", ["scene-square", "scene-portrait", "scene-wide"])
def test_scene_cards_have_exact_size(preset_id):
    preset = cards.FORMATS[preset_id]
    card = cards.compose_scene_card(preset, Image.new("RGB", (64, 64), (30, 200, 30)))
    assert card.size == (preset.width, preset.height)
    assert quality.score_card(card, "scene", _cutout())["colour_match"] < 0.1  # green scene, red product


def test_card_plan_uses_product_json_ids_or_the_defaults():
    defaults = {
        "default_formats": ["main-white"],
        "default_scenes": ["oak-table"],
        "templates_dir": REPO_TEMPLATES,
    }
    plan = cards.plan_cards([], [], **defaults)
    assert [f.id for f in plan.formats] == ["main-white"] and [t.id for t in plan.templates] == ["oak-table"]
    plan = cards.plan_cards(["scene-wide"], ["snowy-evening"], **defaults)
    assert [f.id for f in plan.formats] == ["scene-wide"] and [t.id for t in plan.templates] == [
        "snowy-evening"
    ]
    with pytest.raises(scenes.TemplateError, match="moon"):
        cards.plan_cards([], ["moon"], **defaults)


def test_prompts_are_spelt_in_one_place():
    prompts = ProductPrompts("olis", "umbrella")
    assert (prompts.phrase, prompts.instance, prompts.class_prompt) == (
        "olis umbrella",
        "a photo of olis umbrella",
        "a photo of an umbrella",
    )
    assert prompts.fill("{product} in the rain, {{no braces}}") == "olis umbrella in the rain, {no braces}"
