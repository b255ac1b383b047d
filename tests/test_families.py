"""Model families (issue 33): one object per family says what differs; nothing else compares their names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from product_studio.families import FAMILIES, family_for, family_named, family_of_class

ROOT = Path(__file__).resolve().parents[1]

# name: (its text-to-image pipeline, denoiser, text encoders, objective, a 3:4 card's render size at 1024)
EXPECTED = {
    "sd": ("StableDiffusionPipeline", "unet", ("text_encoder",), "noise-prediction", (888, 1184)),
    "sdxl": (
        "StableDiffusionXLPipeline",
        "unet",
        ("text_encoder", "text_encoder_2"),
        "noise-prediction",
        (896, 1152),  # the trained bucket closest in aspect
    ),
    "flux2-klein": ("Flux2KleinPipeline", "transformer", ("text_encoder",), "flow-matching", (880, 1184)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_family_says_how_it_is_recognised_and_what_it_is_made_of(name):
    pipeline, denoiser, encoders, objective, size = EXPECTED[name]
    family = family_named(name)
    assert family_of_class(pipeline) is family and family.name == name
    assert family_of_class(pipeline.replace("Pipeline", "InpaintPipeline")) is family  # from_pipe's
    assert (family.denoiser, family.text_encoders, family.objective) == (denoiser, encoders, objective)
    w, h = family.render_size(1024, 3 / 4)
    assert (w, h) == size and not w % family.render_multiple and not h % family.render_multiple


def test_an_unknown_family_or_pipeline_is_named():
    with pytest.raises(
        ValueError, match=r"unknown model family 'sd3'; choose one of \['flux2-klein', 'sd', 'sdxl'\]"
    ):
        family_named("sd3")
    assert family_of_class("StableDiffusion3Pipeline") is None


def test_a_pipeline_diffusers_built_under_another_name_is_told_by_its_text_encoders():
    class StableDiffusionImg2ImgPipeline:
        text_encoder_2 = None

    class StableDiffusionXLImg2ImgPipeline:
        text_encoder_2 = object()

    assert family_for(StableDiffusionImg2ImgPipeline()).name == "sd"
    assert family_for(StableDiffusionXLImg2ImgPipeline()).name == "sdxl"


def test_training_refusals_name_the_setting():
    klein = family_named("flux2-klein")
    found = klein.training_refusals({"train_text_encoder": True, "noise_offset": 0.1}, 56)
    assert [m.split(" ")[0] for m in found] == ["resolution", "train_text_encoder=True", "noise_offset=0.1"]
    assert all("PRODUCT_STUDIO_TRAIN__" in m for m in found)
    assert family_named("sd").training_refusals({"train_text_encoder": True, "noise_offset": 0.1}, 512) == []


def test_presets_change_only_what_the_family_sets():
    assert family_named("flux2-klein").preset_values("person") == {"rank": 64, "train_text_encoder": False}
    assert family_named("sd").preset_values("person") == {} == family_named("sdxl").preset_values(None)


def test_no_module_outside_families_compares_a_family_name():
    """The trainer, renderer and loaders ask the family (its attributes and methods) instead."""
    names = set(FAMILIES)
    found = []
    for path in sorted((ROOT / "product_studio").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[1] in ("families", "devkit"):  # the dev kit builds tiny models of a named family
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                values = [node.left, *node.comparators]
                values += [
                    e
                    for v in node.comparators
                    if isinstance(v, (ast.Tuple, ast.List, ast.Set))
                    for e in v.elts
                ]
                if any(isinstance(v, ast.Constant) and v.value in names for v in values):
                    found.append(f"{rel}:{node.lineno}")
    assert not found, found
