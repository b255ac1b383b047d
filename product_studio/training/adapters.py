"""LoRA adapters on a shared pipeline, for the length of a ``with`` block.

Adds peft LoRA to the denoiser -- SD's UNet or FLUX.2 [klein]'s transformer -- (and, for SD and SDXL when
asked, the text encoders), keeps the trainable weights in float32,
switches on gradient checkpointing or eager attention as configured -- and on the
way out puts the pipeline back exactly as it was, whatever happened inside.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from product_studio.families import family_for
from product_studio.models import denoiser_name
from product_studio.training.config import TrainConfig

ADAPTER = "product"
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def text_encoders(pipe) -> dict[str, Any]:
    return {n: getattr(pipe, n) for n in family_for(pipe).text_encoders}


def denoiser(pipe) -> tuple[str, Any]:
    """The pipeline's denoising network and its component name: ``unet`` (SD, SDXL) or ``transformer``."""
    name = denoiser_name(pipe)
    return name, getattr(pipe, name)


def denoiser_targets(pipe, config: TrainConfig) -> list[str]:
    """The modules the denoiser's LoRA adapts (the family's, per preset)."""
    return family_for(pipe).lora_targets(pipe, config.preset)


@dataclass
class Adapters:
    """The modules being trained, in a fixed order (the denoiser first), and their LoRA configs."""

    modules: dict[str, Any]
    configs: dict[str, Any]

    def param_groups(self, config: TrainConfig) -> list[dict[str, Any]]:
        """One optimizer group per module: the denoiser at ``learning_rate``, text encoders at their own."""
        groups = []
        for name, module in self.modules.items():
            lr = (
                config.learning_rate
                if name in ("unet", "transformer")
                else config.text_encoder_lr or config.learning_rate
            )
            groups.append({"params": [p for p in module.parameters() if p.requires_grad], "lr": lr})
        return groups

    def state(self) -> dict[str, dict]:
        """The LoRA weights in peft's key format, per module, on the CPU."""
        from peft.utils import get_peft_model_state_dict

        return {
            name: {
                k: v.detach().cpu().clone()
                for k, v in get_peft_model_state_dict(m, adapter_name=ADAPTER).items()
            }
            for name, m in self.modules.items()
        }

    def load_state(self, state: dict[str, dict]) -> None:
        from peft.utils import set_peft_model_state_dict

        for name, module in self.modules.items():
            set_peft_model_state_dict(module, state[name], adapter_name=ADAPTER)

    def train(self, mode: bool = True) -> None:
        for module in self.modules.values():
            module.train(mode)


@contextlib.contextmanager
def trainable_lora(pipe, config: TrainConfig) -> Iterator[Adapters]:
    """Add the product adapter(s) to ``pipe`` for the block; remove them and every switch afterwards."""
    import torch
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    alpha = config.lora_alpha
    name, unet = denoiser(pipe)
    encoders = text_encoders(pipe)
    for module in (pipe.vae, unet, *encoders.values()):
        module.requires_grad_(False)
    modules: dict[str, Any] = {name: unet}
    configs = {
        name: LoraConfig(
            r=config.rank,
            lora_alpha=alpha,
            init_lora_weights="gaussian",
            target_modules=denoiser_targets(pipe, config),
        )
    }
    if config.train_text_encoder:
        for name, encoder in encoders.items():
            modules[name] = encoder
            configs[name] = LoraConfig(
                r=config.rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=TEXT_TARGETS
            )
    try:
        for name, module in modules.items():
            module.add_adapter(configs[name], adapter_name=ADAPTER)
            cast_training_params(module, dtype=torch.float32)  # trainable LoRA weights stay fp32
        if config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            for name in list(modules)[1:]:
                modules[name].gradient_checkpointing_enable()
        yield Adapters(modules, configs)
    finally:
        for module in modules.values():
            module.eval()
        if config.gradient_checkpointing:
            unet.disable_gradient_checkpointing()
            for name in list(modules)[1:]:
                modules[name].gradient_checkpointing_disable()
        for module in modules.values():
            if ADAPTER in (getattr(module, "peft_config", None) or {}):
                module.delete_adapters(ADAPTER) if module is unet else module.delete_adapter(ADAPTER)
