"""Warm compiled workers (issue 23): the denoiser is compiled once, each SKU's LoRA is hot-swapped into one
slot, and every image, class prior and trained LoRA is the one a fresh pipeline makes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from product_studio import rendering, scenes
from product_studio.identifiers import ProductPrompts
from product_studio.lora_slot import lora_slot
from product_studio.settings import Settings
from product_studio.training import TrainConfig, from_cutout, train_lora

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ProductPrompts("olis", "teapot")
LIBRARY = scenes.load_library(ROOT / "templates")
# A composite scene (the inpainter path) and a generated one at its own LoRA scale (0.8).
TEMPLATES = [LIBRARY["marble-counter"], LIBRARY["in-hand"]]


def _cutout(shade: int) -> Image.Image:
    im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(im).ellipse((14, 12, 50, 54), fill=(shade, 60, 200 - shade, 255))
    return im


def _train(pipe, tmp_path: Path, name: str, shade: int, rank: int = 2) -> Path:
    config = TrainConfig(steps=3, rank=rank, prior_images=2, validation_prompts=[], checkpoint_every=0)
    classes = [Image.new("RGB", (64, 64), (90, 90 + 20 * i, 120)) for i in range(2)]
    instance = [from_cutout(_cutout(shade + 10 * i)) for i in range(3)]
    return train_lora(
        pipe, instance, classes, prompts=PROMPTS, config=config, out_dir=tmp_path / name
    ).lora_file


def _cards(pipe, lora_file: Path, shade: int) -> list[np.ndarray]:
    """Every template's card for one SKU, rendered as the cards stage does."""
    out = []
    with rendering.product_lora(pipe, lora_file):
        for template in TEMPLATES:
            template = template.model_copy(update={"candidates": 1})
            (render,) = rendering.render_scene_cards(
                pipe, template, PROMPTS, _cutout(shade), (96, 128), steps=2
            )
            out.append(np.asarray(render.image, dtype=np.int16))
    return out


def _plain(pipe) -> np.ndarray:
    """What the class-prior stage asks the base model for."""
    image = pipe(
        prompt="a photo of a teapot", num_inference_steps=2, generator=torch.Generator().manual_seed(3)
    ).images[0]
    return np.asarray(image, dtype=np.int16)


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@pytest.mark.parametrize("family", ["sd", "flux2-klein"])
def test_a_warm_compiled_worker_compiles_once_and_makes_what_a_fresh_pipeline_makes(
    family, request, tiny_encoders, tmp_path, monkeypatch
):
    from product_studio.models import load_pipeline

    source = request.getfixturevalue("tiny_model" if family == "sd" else "tiny_klein_model")
    tiny_pipe = load_pipeline(str(source))
    # The documented switch, read by the settings; eager: dynamo's tracing and guards without a C compiler.
    model = shutil.copytree(source, tmp_path / "tiny")  # this test's own pipeline (the loader caches)
    for name, value in {
        "BASE_MODEL": str(model),
        "CLEANER": "grabcut",
        "SCORES__DINO_MODEL": str(tiny_encoders[0]),
        "SCORES__CLIP_MODEL": str(tiny_encoders[1]),
        "RENDER__COMPILE": "true",
        "RENDER__COMPILE_BACKEND": "eager",
        "RENDER__COMPILE_MAX_RANK": "2",
    }.items():
        monkeypatch.setenv(f"PRODUCT_STUDIO_{name}", value)
    warm = Settings().run_models().pipe
    assert warm is not tiny_pipe and lora_slot(warm) is not None

    # What a fresh pipeline makes: three SKUs' LoRAs (the third of a rank above the slot's) and their cards.
    loras = [_train(tiny_pipe, tmp_path, f"fresh-{i}", 40 * i + 20, rank) for i, rank in enumerate((2, 2, 4))]
    expected = [_cards(tiny_pipe, lora, 40 * i + 20) for i, lora in enumerate(loras)]
    base = _plain(tiny_pipe)

    # SKU 1 on the warm worker: its LoRA goes into the slot and the denoiser is compiled.
    assert all(np.array_equal(a, b) for a, b in zip(_cards(warm, loras[0], 20), expected[0], strict=True))
    graphs = _graphs()
    assert graphs > 0 and lora_slot(warm).compiles == 1
    # Between SKUs the slot weighs 0: class priors are the base model's, training is a fresh pipeline's.
    assert np.array_equal(_plain(warm), base)
    trained = _train(warm, tmp_path, "warm-1", 60)
    ours, fresh = load_file(trained), load_file(loras[1])  # (the headers name different model folders)
    assert ours.keys() == fresh.keys() and all(torch.equal(ours[k], fresh[k]) for k in ours)

    # SKU 2: swapped in place, nothing compiled again, the same cards.
    assert all(np.array_equal(a, b) for a, b in zip(_cards(warm, trained, 60), expected[1], strict=True))
    assert _graphs() == graphs and lora_slot(warm).compiles == 1

    # SKU 3's LoRA has a rank above the slot's: loaded beside it for this SKU, still the same cards; the
    # slot keeps working for the next SKU.
    assert all(np.array_equal(a, b) for a, b in zip(_cards(warm, loras[2], 100), expected[2], strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(_cards(warm, loras[0], 20), expected[0], strict=True))
    assert np.array_equal(_plain(warm), base)


def test_a_bad_compile_setting_names_its_variable(monkeypatch):
    from pydantic import ValidationError

    from product_studio.settings import describe_settings_error

    monkeypatch.setenv("PRODUCT_STUDIO_RENDER__COMPILE", "true")
    monkeypatch.setenv("PRODUCT_STUDIO_RENDER__COMPILE_BACKEND", "tensorrt")
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = describe_settings_error(caught.value)
    assert message.startswith("PRODUCT_STUDIO_RENDER__COMPILE_BACKEND=tensorrt: ") and "inductor" in message
