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


def preset_values(name: str) -> dict[str, Any]:
    """The fields a preset sets; a clear error names the valid presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown training preset {name!r}; choose one of {sorted(PRESETS)}")
    return dict(PRESETS[name])
