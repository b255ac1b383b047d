"""A tiny FLUX.2 [klein] folder with seeded random weights, for tests, the demo and benchmarks.

``build_tiny_flux2_klein`` writes a real ``Flux2KleinPipeline`` folder -- the FLUX.2 transformer, the FLUX.2
VAE (8x down, latents patchified 2x2 and batch-normalised), a Qwen3 text encoder and a Qwen2 byte-level BPE
tokenizer with a chat template -- at toy width, so every stage loads it through ``from_pretrained`` exactly as
it loads ``black-forest-labs/FLUX.2-klein-base-4B``, on a CPU, without downloading anything.

The tokenizer is built here, in code: its words are the word-final tokens of the real CLIP BPE (shipped in
the ``open_clip_torch`` wheel) in their merge order, so common words get low ids and rare ones high ids, as
in Qwen's own vocabulary. Each word becomes one space-prefixed token (``Ġteapot``) through a chain of merges
that only ever extends the token from its left; other text falls back to bytes.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

from product_studio.devkit.tiny_models import _CLIP_MERGES, _bytes_to_unicode, clip_bpe_source

# Qwen3's special tokens, after the BPE vocabulary as in Qwen's own.
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
# Qwen3's chat format as the klein pipeline asks for it (one user turn, generation prompt, thinking off).
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{% endif %}{% endif %}"
)
# The hidden-state layers the klein pipeline reads by default, (9, 18, 27): the encoder needs 28 layers.
TEXT_LAYERS = 28
TEXT_WIDTH = 16


def _clip_words() -> list[str]:
    """CLIP's lowercase ASCII word-final tokens of 2+ letters, most frequent (first merged) first."""
    lines = gzip.decompress(clip_bpe_source().read_bytes()).decode("utf-8").split("\n")
    words: dict[str, None] = {}
    for line in lines[1 : _CLIP_MERGES + 1]:
        token = "".join(line.split())
        word = token[:-4]
        if token.endswith("</w>") and len(word) >= 2 and word.isascii() and word.isalpha() and word.islower():
            words.setdefault(word)
    return list(words)


def qwen_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary and merges in Qwen2's format: 256 byte tokens, then ``Ġword`` chains."""
    alphabet = list(_bytes_to_unicode().values())
    space = _bytes_to_unicode()[ord(" ")]
    vocab = {t: i for i, t in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    for word in _clip_words():
        current = space
        for ch in word:
            if current + ch not in vocab:
                vocab[current + ch] = len(vocab)
                merges.append((current, ch))
            current += ch
    return vocab, merges


def build_qwen_tokenizer():
    """A ``Qwen2Tokenizer`` (transformers' byte-level BPE class the klein pipeline names) with a chat
    template, built from :func:`qwen_vocabulary`."""
    from transformers import Qwen2Tokenizer

    vocab, merges = qwen_vocabulary()
    for token in QWEN_SPECIALS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, additional_special_tokens=list(QWEN_SPECIALS[1:]))
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 512
    return tokenizer


MODEL_CARD = """---
license: apache-2.0
library_name: diffusers
pipeline_tag: text-to-image
---
# Tiny FLUX.2 [klein] (seeded random weights)

Written by `product-studio tiny-model PATH --family flux2-klein` for tests and demos; it makes noise, not
pictures. The licence above is the one FLUX.2 [klein] 4B's model card states.
"""


def build_tiny_flux2_klein(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny FLUX.2 [klein] (base, not step-distilled: the one LoRAs are trained on) to ``path``.

    Shapes follow klein 4B at toy width: a VAE with four blocks (8x down, 64 px -> 8x8 latents -> 4x4
    patches of 4x4 channels), a transformer with one double- and one single-stream block reading the text
    encoder's layers 9, 18 and 27 side by side, a 28-layer Qwen3 encoder 16 wide, the flow-matching Euler
    scheduler. Renders at multiples of 16 px. Its images are noise: it exists so every stage runs for real.
    """
    import torch
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )

    out = Path(path)
    tokenizer = build_qwen_tokenizer()
    torch.manual_seed(seed)
    text_encoder = _tiny_qwen3(tokenizer)
    latent_channels = 4
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=latent_channels * 4,  # latents are patchified 2x2 before the transformer
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * TEXT_WIDTH,  # three encoder layers side by side
        timestep_guidance_channels=256,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    )
    vae = AutoencoderKLFlux2(
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=64,
    )
    # klein's scheduler: flow matching, its shift set per image size by the pipeline (dynamic shifting).
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    pipe = Flux2KleinPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    # A model card as klein 4B's states its licence (the manifest records it; the weights are ours, random).
    (out / "README.md").write_text(MODEL_CARD, encoding="utf-8")
    return out


def _tiny_qwen3(tokenizer: Any) -> Any:
    """A 28-layer Qwen3 text encoder 16 wide (klein reads its layers 9, 18 and 27), seeded by the caller."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_WIDTH,
            intermediate_size=16,
            num_hidden_layers=TEXT_LAYERS,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        )
    )
