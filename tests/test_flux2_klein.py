"""FLUX.2 [klein]: the tiny seeded model, family recognition, identifiers, rendering and LoRA training."""

from __future__ import annotations

import json
import time

import numpy as np
import torch


def _render(pipe, prompt: str = "a photo of a teapot", size: int = 64) -> np.ndarray:
    return pipe(
        prompt=prompt,
        height=size,
        width=size,
        num_inference_steps=2,
        guidance_scale=1.0,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="np",
    ).images[0]


def test_tiny_klein_loads_offline_in_plain_diffusers_and_renders(tiny_klein_model):
    from diffusers import Flux2KleinPipeline

    index = json.loads((tiny_klein_model / "model_index.json").read_text())
    assert index["_class_name"] == "Flux2KleinPipeline"
    assert index["tokenizer"] == ["transformers", "Qwen2Tokenizer"]
    assert index["text_encoder"] == ["transformers", "Qwen3ForCausalLM"]
    pipe = Flux2KleinPipeline.from_pretrained(str(tiny_klein_model))
    pipe.set_progress_bar_config(disable=True)
    # The pipeline's own chat formatting and default encoder layers (9, 18, 27) work unchanged.
    chat = pipe.tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert chat == "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    started = time.perf_counter()
    image = _render(pipe)
    assert time.perf_counter() - started < 20
    assert image.shape == (64, 64, 3)
    assert np.isfinite(image).all() and image.std() > 0.01
    np.testing.assert_array_equal(_render(pipe), image)  # seeded


def test_tiny_klein_is_seeded(tiny_klein_model, tmp_path):
    from flows.cli import main

    assert main(["tiny-model", str(tmp_path / "again"), "--family", "flux2-klein"]) == 0
    for part in ("transformer", "vae", "text_encoder"):
        (first,) = (tiny_klein_model / part).glob("*.safetensors")
        assert first.read_bytes() == (tmp_path / "again" / part / first.name).read_bytes()


def test_words_are_single_space_prefixed_tokens(tiny_klein_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_klein_model), subfolder="tokenizer")
    assert tokenizer.tokenize("a photo of olis teapot") == ["a", "Ġphoto", "Ġof", "Ġolis", "Ġteapot"]
    vocab = tokenizer.get_vocab()
    assert vocab["Ġthe"] < vocab["Ġteapot"] < vocab["Ġolis"]  # frequent words first, as in Qwen's BPE
