"""The optimizer of a training run, chosen by ``TrainConfig.optimizer``."""

from __future__ import annotations

from typing import Any

from product_studio.training.config import TrainConfig
from product_studio.training.errors import TrainingError


def make_optimizer(config: TrainConfig, groups: list[dict[str, Any]], device: str):
    """AdamW over the LoRA parameter groups: fused where torch has the kernel, or bitsandbytes' 8-bit one."""
    import torch

    if config.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise TrainingError(
                "optimizer 'adamw8bit' needs bitsandbytes (pip install bitsandbytes, CUDA only); "
                "or use optimizer 'adamw'"
            ) from exc
        return bnb.optim.AdamW8bit(groups, weight_decay=config.weight_decay)
    # Fused: torch's one-kernel AdamW over every LoRA tensor, on CUDA and on the CPU (torch's own kernels,
    # the same update); elsewhere (MPS, ...) its default implementation.
    fused = torch.device(device).type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay, fused=fused)
