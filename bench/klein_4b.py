"""FLUX.2 [klein] 4B at its real shapes with seeded random weights, for ``bench/gpu.py`` (no download).

The shapes are klein 4B's (``black-forest-labs/FLUX.2-klein-base-4B``): a FLUX.2 transformer of 5 double- and
20 single-stream blocks, 24 heads of 128, reading three layers (9, 18, 27) of a Qwen3-4B text encoder side by
side (3 x 2560 = 7680 wide); the FLUX.2 VAE (32 latent channels, patchified 2x2 to the transformer's 128).
Random weights cost exactly what trained ones do; the tokenizer is the dev kit's Qwen-style one (same
special tokens and chat template; only the ids differ).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

# Qwen3-4B, klein 4B's text encoder.
QWEN3_4B = {
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
}
# klein 4B's transformer: what differs from diffusers' Flux2Transformer2DModel defaults (FLUX.2 [dev]).
KLEIN_4B_TRANSFORMER = {
    "num_layers": 5,
    "num_single_layers": 20,
    "num_attention_heads": 24,
    "attention_head_dim": 128,
    "joint_attention_dim": 3 * QWEN3_4B["hidden_size"],
    "guidance_embeds": False,
}


def build_klein(tiny: bool, device: str, dtype):
    """A ``Flux2KleinPipeline`` (base, not step-distilled) on ``device`` in ``dtype``: klein 4B's shapes,
    or the dev kit's tiny klein with ``tiny``."""
    import torch
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from product_studio.devkit.tiny_flux2 import build_qwen_tokenizer, build_tiny_flux2_klein
    from product_studio.models import load_pipeline

    if tiny:
        folder = build_tiny_flux2_klein(Path(tempfile.mkdtemp()) / "klein")
        load_pipeline.cache_clear()
        return load_pipeline(str(folder)).to(device, dtype)
    torch.manual_seed(0)
    tokenizer = build_qwen_tokenizer()
    with torch.device(device):  # initialised on the GPU: minutes faster than on the CPU at 8B parameters
        text_encoder = Qwen3ForCausalLM(
            Qwen3Config(
                **QWEN3_4B,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            )
        )
        transformer = Flux2Transformer2DModel(**KLEIN_4B_TRANSFORMER)
        vae = AutoencoderKLFlux2()  # the FLUX.2 VAE's defaults
    pipe = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)
