"""Train: DreamBooth LoRA with class-prior preservation, on a loaded Stable Diffusion pipeline.

Reads top to bottom like diffusers' ``train_dreambooth_lora.py``: freeze -> add LoRA -> cache latents and
prompt embeddings -> loop -> save. What does not change between steps is computed once: the VAE's latent
distribution of every image (a fresh latent is still *sampled* from it each step) and the frozen text
encoder's prompt embeddings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from product_studio.models import native_resolution
from product_studio.settings import TrainSettings

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionPipeline

ADAPTER = "product"
LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' default name: load_lora_weights(folder) finds it
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


class TrainingError(RuntimeError):
    """Training could not run or diverged; the message says what to change."""


@dataclass
class TrainResult:
    lora_file: Path
    steps: int
    resolution: int
    rank: int
    alpha: int
    seconds: float
    losses: list[float] = field(default_factory=list)


def _pixels(images: list[Image.Image], resolution: int) -> torch.Tensor:
    import torch

    arrays = [
        np.asarray(im.convert("RGB").resize((resolution, resolution), Image.Resampling.BICUBIC), np.float32)
        for im in images
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0


def _latent_stats(pipe: StableDiffusionPipeline, images: list[Image.Image], resolution: int, device: str):
    """Mean and std of the VAE's latent distribution per image, computed once."""
    import torch

    means, stds = [], []
    with torch.no_grad():
        for start in range(0, len(images), 8):
            px = _pixels(images[start : start + 8], resolution).to(device, pipe.vae.dtype)
            dist = pipe.vae.encode(px).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
    return torch.cat(means), torch.cat(stds)


def _embed(pipe: StableDiffusionPipeline, prompt: str, device: str) -> torch.Tensor:
    import torch

    ids = pipe.tokenizer(
        prompt,
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)
    with torch.no_grad():
        return pipe.text_encoder(ids)[0]


def train_lora(
    pipe: StableDiffusionPipeline,
    instance_images: list[Image.Image],
    class_images: list[Image.Image],
    *,
    instance_prompt: str,
    class_prompt: str,
    config: TrainSettings,
    out_dir: Path,
    metadata: dict[str, str] | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train a UNet LoRA on ``instance_images`` (with prior preservation on ``class_images``).

    The pipeline is left as it was found: the adapter is removed after saving.
    """
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    if not instance_images:
        raise TrainingError("no instance images to train on")
    use_prior = config.prior_loss_weight > 0 and config.prior_images > 0
    if use_prior and not class_images:
        raise TrainingError("prior preservation is on but there are no class images")
    resolution = config.resolution or native_resolution(pipe)
    alpha = config.alpha or config.rank
    unet, device = pipe.unet, pipe.device.type if pipe.device.index is None else str(pipe.device)
    weight_dtype = unet.dtype
    gen = torch.Generator("cpu").manual_seed(config.seed)
    torch.manual_seed(config.seed)

    for module in (pipe.vae, pipe.text_encoder, unet):
        module.requires_grad_(False)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    lora_config = LoraConfig(
        r=config.rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=LORA_TARGETS
    )
    unet.add_adapter(lora_config, adapter_name=ADAPTER)
    try:
        cast_training_params(unet, dtype=torch.float32)  # trainable LoRA weights stay fp32
        params = [p for p in unet.parameters() if p.requires_grad]
        inst_mean, inst_std = _latent_stats(pipe, instance_images, resolution, device)
        inst_emb = _embed(pipe, instance_prompt, device)
        if use_prior:
            cls_mean, cls_std = _latent_stats(pipe, class_images, resolution, device)
            cls_emb = _embed(pipe, class_prompt, device)
            encoder_states = torch.cat([inst_emb, cls_emb])
        else:
            encoder_states = inst_emb

        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=1e-2)
        lr_schedule = get_scheduler(
            "constant_with_warmup",
            optimizer,
            num_warmup_steps=config.lr_warmup_steps,
            num_training_steps=config.steps,
        )
        fp16 = weight_dtype == torch.float16
        scaler = torch.amp.GradScaler(device=pipe.device.type, enabled=fp16)  # loss scaling for fp16
        scale = pipe.vae.config.scaling_factor
        n_timesteps = noise_scheduler.config.num_train_timesteps
        losses: list[float] = []
        started = time.perf_counter()
        unet.train()
        for step in range(config.steps):
            i = torch.randint(len(inst_mean), (1,), generator=gen)
            mean, std = inst_mean[i], inst_std[i]
            if use_prior:
                j = torch.randint(len(cls_mean), (1,), generator=gen)
                mean, std = torch.cat([mean, cls_mean[j]]), torch.cat([std, cls_std[j]])
            latents = (mean + std * torch.randn(mean.shape, generator=gen).to(device)) * scale
            noise = torch.randn(latents.shape, generator=gen).to(device)
            timesteps = torch.randint(0, n_timesteps, (latents.shape[0],), generator=gen).to(device)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            if noise_scheduler.config.prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(latents, noise, timesteps)
            else:
                target = noise
            with torch.autocast(pipe.device.type, dtype=weight_dtype, enabled=weight_dtype != torch.float32):
                pred = unet(noisy.to(weight_dtype), timesteps, encoder_states).sample
            if use_prior:
                pred_i, pred_c = pred.float().chunk(2)
                target_i, target_c = target.chunk(2)
                loss = F.mse_loss(pred_i, target_i) + config.prior_loss_weight * F.mse_loss(pred_c, target_c)
            else:
                loss = F.mse_loss(pred.float(), target)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(
                    f"loss became {value} at step {step}; lower the learning rate ({config.learning_rate}) "
                    "or train in float32"
                )
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(value)
            if progress is not None:
                progress(step + 1, value)
        seconds = time.perf_counter() - started

        out_dir.mkdir(parents=True, exist_ok=True)
        state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=ADAPTER))
        from diffusers import StableDiffusionPipeline as SDPipeline

        SDPipeline.save_lora_weights(
            out_dir,
            unet_lora_layers=state,
            weight_name=LORA_FILE,
            safe_serialization=True,
            unet_lora_adapter_metadata=lora_config.to_dict(),
        )
        if metadata:
            _add_file_metadata(out_dir / LORA_FILE, metadata)
    finally:
        unet.eval()
        unet.delete_adapters(ADAPTER)
    return TrainResult(out_dir / LORA_FILE, config.steps, resolution, config.rank, alpha, seconds, losses)


def _add_file_metadata(path: Path, extra: dict[str, Any]) -> None:
    """Add product metadata (identifier, class noun, base model, ...) to a safetensors file's header."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    meta.update({f"product_studio.{k}": str(v) for k, v in extra.items()})
    save_file(tensors, str(path), metadata=meta)
