"""Named hyper-parameter presets per kind of product.

Starting points, not magic: the diffusers DreamBooth README (LoRA learning rate 1e-4, 200-300 class
images, prior-loss weight 1) and the DreamBooth paper's findings for faces (more capacity and steps, text
encoder trained too). Any field set explicitly overrides its preset value.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # Rigid goods with a clear silhouette: mugs, teapots, shoes, bags.
    "object": {
        "steps": 800,
        "rank": 16,
        "learning_rate": 1e-4,
        "prior_images": 200,
        "snr_gamma": 5.0,
        "masked_loss": True,
        "background_weight": 0.1,
    },
    # Printed labels, engraving, jewellery: more capacity and a gentler rate so details are not invented,
    # almost no weight on the background.
    "fine-detail": {
        "steps": 1200,
        "rank": 32,
        "learning_rate": 5e-5,
        "lr_warmup_steps": 100,
        "prior_images": 300,
        "snr_gamma": 5.0,
        "masked_loss": True,
        "background_weight": 0.05,
    },
    # People and worn products on people: rank 64-128 and ~1000 steps, text encoder trained as well.
    "person": {
        "steps": 1000,
        "rank": 64,
        "learning_rate": 1e-4,
        "train_text_encoder": True,
        "text_encoder_lr": 5e-6,
        "prior_images": 300,
        "snr_gamma": 5.0,
        "masked_loss": False,
    },
    # A fast preview run to check photos and prompts before a full one.
    "quick": {"steps": 300, "rank": 8, "learning_rate": 2e-4, "prior_images": 100, "checkpoint_every": 0},
}


# FLUX.2 [klein]: what each preset changes on a klein base (docs/training.md). diffusers'
# train_dreambooth_lora_flux2_klein.py trains rank 4 (alpha 4) on the attention projections of both kinds
# of block by default; its --lora_layers adds the context projections and feed-forward layers. Fields set
# explicitly still win.
KLEIN_PRESETS: dict[str, dict[str, Any]] = {
    "object": {"rank": 16},
    "fine-detail": {"rank": 32},
    # klein trains the transformer only (the script has no text-encoder LoRA): capacity goes there.
    "person": {"rank": 64, "train_text_encoder": False},
    "quick": {"rank": 4},  # the script's own default
}
# The script's default targets ("single.attn.to_out": each single-stream block's output projection).
KLEIN_ATTENTION = ["to_k", "to_q", "to_v", "to_out.0", "to_qkv_mlp_proj", "single.attn.to_out"]
# Plus the text stream's attention projections and both streams' feed-forward layers.
KLEIN_ATTENTION_MLP = [
    *KLEIN_ATTENTION,
    *["add_k_proj", "add_q_proj", "add_v_proj", "to_add_out"],
    *["ff.linear_in", "ff.linear_out", "ff_context.linear_in", "ff_context.linear_out"],
]
KLEIN_TARGETS: dict[str, list[str]] = {"fine-detail": KLEIN_ATTENTION_MLP, "person": KLEIN_ATTENTION_MLP}


def family_preset_values(name: str | None, family: str | None) -> dict[str, Any]:
    """The fields a preset sets differently on a base model family (none for SD and SDXL)."""
    if name is None or family != "flux2-klein":
        return {}
    preset_values(name)  # names the valid presets
    return dict(KLEIN_PRESETS.get(name, {}))


def klein_targets(name: str | None) -> list[str]:
    """The klein transformer modules a preset's LoRA adapts (the script's default without a preset)."""
    return list(KLEIN_TARGETS.get(name or "", KLEIN_ATTENTION))


def preset_values(name: str) -> dict[str, Any]:
    """The fields a preset sets; a clear error names the valid presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown training preset {name!r}; choose one of {sorted(PRESETS)}")
    return dict(PRESETS[name])
