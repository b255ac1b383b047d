"""Warm compiled workers (issue 23): the denoiser is compiled once, each SKU's LoRA is hot-swapped into one
slot, and every image, class prior and trained LoRA is the one a fresh pipeline makes; a LoRA the slot cannot
take is loaded beside it and leaves nothing behind (issue 39)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from product_studio.identifiers import ProductPrompts
from product_studio.loaded_models import load_run_models
from product_studio.rendering import renderer, scenes
from product_studio.rendering.lora_slot import (
    SLOT_ADAPTER,
    LoraSlotError,
    adapter_state,
    keep_lora_slot,
    lora_slot,
    plain_denoiser,
    unswappable,
)
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


def _train(pipe, tmp_path: Path, name: str, shade: int, rank: int = 2, **options) -> Path:
    config = TrainConfig(
        steps=3, rank=rank, prior_images=2, validation_prompts=[], checkpoint_every=0, **options
    )
    classes = [Image.new("RGB", (64, 64), (90, 90 + 20 * i, 120)) for i in range(2)]
    instance = [from_cutout(_cutout(shade + 10 * i)) for i in range(3)]
    return train_lora(
        pipe, instance, classes, prompts=PROMPTS, config=config, out_dir=tmp_path / name
    ).lora_file


def _cards(pipe, lora_file: Path, shade: int) -> list[np.ndarray]:
    """Every template's card for one SKU, rendered as the cards stage does."""
    out = []
    with renderer.product_lora(pipe, lora_file):
        for template in TEMPLATES:
            template = template.model_copy(update={"candidates": 1})
            (render,) = renderer.render_scene_cards(
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


@pytest.mark.slow
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
    warm = load_run_models(Settings().model_refs()).pipe
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
    # slot keeps working for the next SKU, at its own rank: nothing compiled again (issue 39: a rank-4 LoRA
    # hot-swapped into the slot grew its tensors, and later SKUs' cards depended on the BLAS kernel).
    slot_shapes = _slot_shapes(warm)
    assert all(np.array_equal(a, b) for a, b in zip(_cards(warm, loras[2], 100), expected[2], strict=True))
    assert _slot_shapes(warm) == slot_shapes
    assert all(np.array_equal(a, b) for a, b in zip(_cards(warm, loras[0], 20), expected[0], strict=True))
    assert _graphs() == graphs and lora_slot(warm).compiles == 1
    assert np.array_equal(_plain(warm), base)


def _slot_shapes(pipe) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in plain_denoiser(pipe).named_parameters() if SLOT_ADAPTER in n}


def _slot_weights(pipe) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in plain_denoiser(pipe).named_parameters() if SLOT_ADAPTER in n}


LEFTOVERS = {
    # What a LoRA block could leave behind, done inside the block as a careless loader or renderer would.
    "nothing": lambda pipe, lora: None,
    "an adapter": lambda pipe, lora: pipe.load_lora_weights(
        str(lora.parent), weight_name=lora.name, adapter_name="stray"
    ),
    "a scale": lambda pipe, lora: plain_denoiser(pipe).set_adapters([SLOT_ADAPTER], weights=[0.5]),
    "a hook": lambda pipe, lora: plain_denoiser(pipe).conv_in.register_forward_hook(lambda *_: None),
}


@pytest.fixture(scope="module")
def slot_loras(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """LoRAs for a slot of rank 2: one that fits, one of rank 4, one that trains the text encoder too."""
    from product_studio.models import load_pipeline

    pipe, tmp = load_pipeline(str(tiny_model)), tmp_path_factory.mktemp("loras")
    return {
        "fits": _train(pipe, tmp, "rank-2", 20),
        "rank 4": _train(pipe, tmp, "rank-4", 60, rank=4),
        "text encoder": _train(pipe, tmp, "text-encoder", 100, train_text_encoder=True),
    }


@pytest.mark.parametrize("leftover", LEFTOVERS)
def test_a_lora_loaded_beside_the_slot_leaves_no_adapter_scale_or_hook_behind(
    leftover, slot_loras, tiny_model, tmp_path, caplog
):
    from product_studio.models import load_pipeline

    pipe = load_pipeline(str(shutil.copytree(tiny_model, tmp_path / "tiny")))
    slot = keep_lora_slot(pipe, 2, compile=False)
    fits, too_big, with_text = slot_loras["fits"], slot_loras["rank 4"], slot_loras["text encoder"]
    assert unswappable(fits, 2) is None and "rank 4" in unswappable(too_big, 2)
    assert "text encoder" in unswappable(with_text, 2)

    # The worker's first SKU is above the slot's rank: nothing is left of it, not even peft's wrappers,
    # and the slot is still armed for its first LoRA.
    bare = adapter_state(pipe)
    with renderer.product_lora(pipe, too_big):
        assert not slot.loaded and adapter_state(pipe) != bare
    assert adapter_state(pipe) == bare

    with renderer.product_lora(pipe, fits):  # the next SKU fits: into the slot
        assert slot.swapped_in
    state, weights, base = adapter_state(pipe), _slot_weights(pipe), _plain(pipe)
    assert state != bare and weights

    caplog.clear()
    if leftover == "nothing":
        for lora, why in ((too_big, "rank 4"), (with_text, "text encoder")):
            with renderer.product_lora(pipe, lora):
                assert not slot.swapped_in and renderer.LORA_ADAPTER in plain_denoiser(pipe).peft_config
            assert "loaded without the slot" in caplog.text and why in caplog.text
            assert adapter_state(pipe) == state
            after = _slot_weights(pipe)
            assert after.keys() == weights.keys() and all(torch.equal(after[k], weights[k]) for k in after)
            assert np.array_equal(_plain(pipe), base)
        return
    refused = pytest.raises(LoraSlotError, match="restart the worker")
    with refused as caught, renderer.product_lora(pipe, too_big):
        LEFTOVERS[leftover](pipe, fits)
    assert adapter_state(pipe) != state
    assert {"an adapter": "stray", "a scale": "0.5", "a hook": "conv_in"}[leftover] in str(caught.value)
    # The worker renders no more: every later SKU's cards could depend on this one.
    with pytest.raises(LoraSlotError, match=re.escape(str(too_big))), renderer.product_lora(pipe, fits):
        pass


def _lora_file(path: Path, keys: dict[str, tuple[int, int]]) -> Path:
    save_file({k: torch.zeros(shape) for k, shape in keys.items()}, str(path))
    return path


@pytest.mark.parametrize(
    "layout, down, up",
    [
        (
            "peft (klein's files)",
            "transformer.blocks.0.to_q.lora_A.weight",
            "transformer.blocks.0.to_q.lora_B.weight",
        ),
        ("diffusers (SD's files)", "unet.mid.to_q.lora.down.weight", "unet.mid.to_q.lora.up.weight"),
        ("kohya", "lora_unet_mid_to_q.lora_down.weight", "lora_unet_mid_to_q.lora_up.weight"),
    ],
)
def test_the_slot_reads_a_lora_files_rank_in_every_key_layout(layout, down, up, tmp_path):
    for rank, fits in ((2, True), (4, False)):
        lora = _lora_file(tmp_path / f"{rank}.safetensors", {down: (rank, 32), up: (32, rank)})
        why = unswappable(lora, 2)
        assert (why is None) is fits, (layout, rank, why)
        assert fits or f"rank {rank} is above PRODUCT_STUDIO_RENDER__COMPILE_MAX_RANK=2" in why
    # Keys it cannot read a rank from are never swapped in (peft would grow the slot to fit them).
    odd = _lora_file(tmp_path / "odd.safetensors", {"unet.mid.to_q.weight_delta": (4, 32)})
    assert "none of its 1 keys names a LoRA down matrix" in unswappable(odd, 2)


def test_a_bad_compile_setting_names_its_variable(monkeypatch):
    from pydantic import ValidationError

    from product_studio.settings import describe_settings_error

    monkeypatch.setenv("PRODUCT_STUDIO_RENDER__COMPILE", "true")
    monkeypatch.setenv("PRODUCT_STUDIO_RENDER__COMPILE_BACKEND", "tensorrt")
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = describe_settings_error(caught.value)
    assert message.startswith("PRODUCT_STUDIO_RENDER__COMPILE_BACKEND=tensorrt: ") and "inductor" in message
