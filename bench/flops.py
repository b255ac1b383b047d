"""FLOPs of one LoRA training step, counted by ``torch.utils.flop_counter`` (for MFU in ``bench/gpu.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def step_flops(pipe, resolution: int, rank: int) -> float:
    """FLOPs of one training step: the denoiser's forward and backward with a LoRA of ``rank`` on the
    trainer's default targets, one instance and one class image at ``resolution``, called as the trainer
    calls it (SD/SDXL's UNet, or FLUX.2 [klein]'s transformer)."""
    from peft import LoraConfig
    from torch.utils.flop_counter import FlopCounterMode

    from product_studio.families import family_for
    from product_studio.training import TrainConfig
    from product_studio.training.adapters import denoiser, denoiser_targets

    _, net = denoiser(pipe)
    targets = denoiser_targets(pipe, TrainConfig())
    net.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets), adapter_name="flops")
    try:
        prepare = _klein_step if family_for(pipe).objective == "flow-matching" else _unet_step
        step = prepare(pipe, net, resolution)
        with FlopCounterMode(display=False) as counter:
            step().float().mean().backward()
        return float(counter.get_total_flops())
    finally:
        net.delete_adapters("flops")
        net.zero_grad(set_to_none=True)


def _unet_step(pipe, unet, resolution: int) -> Callable[[], Any]:
    import torch

    from product_studio.training.conditioning import PromptConditioner

    device = pipe.device.type
    hidden, added = PromptConditioner(pipe, resolution, device).encode(["a photo", "a photo"])
    side = resolution // pipe.vae_scale_factor
    x = torch.randn(2, 4, side, side, device=device, dtype=unet.dtype)
    t = torch.randint(0, 1000, (2,), device=device)
    return lambda: unet(x, t, hidden.detach(), added_cond_kwargs=added).sample


def _klein_step(pipe, transformer, resolution: int) -> Callable[[], Any]:
    import torch

    from product_studio.training.klein import encode_prompts, predict

    device = transformer.device
    embeds, text_ids = encode_prompts(pipe, ["a photo", "a photo"])
    side = resolution // 16  # 8x VAE, then 2x2 patches
    x = torch.randn(2, transformer.config.in_channels, side, side, device=device, dtype=transformer.dtype)
    t = torch.rand(2, device=device) * 1000
    return lambda: predict(transformer, x, t, embeds, text_ids)
