"""DreamBooth LoRA on the FLUX.2 [klein] transformer (first slice of issue 22; not yet behind
``train_lora``).

Reads like diffusers' ``train_dreambooth_lora_flux2_klein.py``: freeze, add LoRA to the transformer (the
script's default targets: attention projections of the double-stream blocks, the fused QKV+MLP projection and
the output projection of the single-stream blocks), encode every image once with the VAE (its mode,
patchified 2x2 and batch-normalised with the VAE's running statistics), encode the instance and class prompts
once, then steps of the flow-matching objective (``flow_matching.py``) with class-prior preservation as its
own loss term, and the LoRA saved with ``Flux2KleinPipeline.save_lora_weights``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from product_studio.identifiers import ProductPrompts
from product_studio.training.adapters import ADAPTER, Adapters
from product_studio.training.config import TrainConfig
from product_studio.training.data import TrainingImage, alpha_weights, pixels
from product_studio.training.export import lora_metadata, save_lora
from product_studio.training.flow_matching import FlowMatchingSchedule
from product_studio.training.losses import dreambooth_loss

if TYPE_CHECKING:
    import torch

DOUBLE_BLOCK_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "to_qkv_mlp_proj"]


def lora_targets(transformer) -> list[str]:
    """diffusers' klein script's default LoRA targets, for this transformer's number of single blocks."""
    singles = len(transformer.single_transformer_blocks)
    return DOUBLE_BLOCK_TARGETS + [f"single_transformer_blocks.{i}.attn.to_out" for i in range(singles)]


def encode_latents(pipe, images: list[Image.Image], resolution: int, device: str) -> torch.Tensor:
    """The images as the transformer's latents (N, 4*C, res/16, res/16): the VAE's mode, patchified 2x2 and
    normalised by the VAE's batch-norm statistics, as the klein pipeline encodes reference images."""
    import torch

    vae = pipe.vae
    with torch.no_grad():
        x = pixels(images, resolution).to(device, vae.dtype)
        latents = pipe._patchify_latents(vae.encode(x).latent_dist.mode())
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latents)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(latents)
    return ((latents - mean) / std).float()


def encode_prompts(pipe, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt embeddings and text position ids, with the pipeline's own ``encode_prompt`` (frozen encoder)."""
    import torch

    with torch.no_grad():
        embeds, text_ids = pipe.encode_prompt(texts, device=pipe.text_encoder.device)
    return embeds, text_ids


def predict(transformer, noisy: torch.Tensor, timesteps: torch.Tensor, embeds, text_ids) -> torch.Tensor:
    """The transformer's velocity prediction for latents (B, C, h, w), in the same layout."""
    from diffusers import Flux2KleinPipeline

    ids = Flux2KleinPipeline._prepare_latent_ids(noisy).to(noisy.device)
    packed = Flux2KleinPipeline._pack_latents(noisy)
    pred = transformer(
        hidden_states=packed.to(transformer.dtype),
        timestep=(timesteps / 1000).to(transformer.dtype),
        guidance=None,  # klein has no guidance embedding
        encoder_hidden_states=embeds.to(transformer.dtype),
        txt_ids=text_ids,
        img_ids=ids,
        return_dict=False,
    )[0]
    return Flux2KleinPipeline._unpack_latents_with_ids(pred[:, : packed.shape[1]], ids)


@dataclass
class KleinRun:
    """What the steps need, prepared once: latents, fixed prompt embeddings (instance rows, then class
    rows), the schedule, optimizer and random generator."""

    config: TrainConfig
    transformer: Any
    instances: Any  # (N, C, h, w)
    weights: Any | None  # (N, 1, h, w): the cutouts' alpha with a background floor; None: unmasked
    classes: Any | None  # (M, C, h, w), None without prior preservation
    embeds: Any  # (batch rows: instance x batch_size, then class x batch_size, L, D)
    text_ids: Any
    schedule: FlowMatchingSchedule
    params: list[Any]
    optimizer: Any
    generator: Any

    def batch(self) -> tuple[Any, Any | None]:
        """``batch_size`` random instance latents, then as many class latents; the instances' weights."""
        import torch

        n = self.config.batch_size
        index = torch.randint(len(self.instances), (n,), generator=self.generator)
        picked = [self.instances[index]]
        if self.classes is not None:
            picked.append(self.classes[torch.randint(len(self.classes), (n,), generator=self.generator)])
        return torch.cat(picked), None if self.weights is None else self.weights[index]


def step_loss(run: KleinRun) -> torch.Tensor:
    """One batch's loss: instance flow-matching loss + ``prior_loss_weight`` x the class half's."""
    import torch

    latents, weights = run.batch()
    latents = latents.to(run.embeds.device)
    noise = torch.randn(latents.shape, generator=run.generator).to(latents)
    timesteps, sigmas = run.schedule.sample(latents.shape[0], run.generator)
    noisy, target = run.schedule.noisy_and_target(latents, noise, sigmas)
    pred = predict(run.transformer, noisy, timesteps, run.embeds, run.text_ids)
    return dreambooth_loss(
        pred,
        target,
        instances=run.config.batch_size,
        weights=None if weights is None else weights.to(pred.device),
        sample_weights=run.schedule.sample_weights(sigmas),
        prior_loss_weight=run.config.prior_loss_weight,
    )


def prepare_run(
    pipe,
    instance_images: list[TrainingImage],
    class_images: list[Image.Image],
    prompts: ProductPrompts,
    config: TrainConfig,
    resolution: int,
) -> KleinRun:
    """Latents, prompt embeddings (computed once), schedule, optimizer; the LoRA already added."""
    import torch

    device = str(pipe.transformer.device)
    texts = [prompts.instance] + ([prompts.class_prompt] if class_images else [])
    embeds, text_ids = encode_prompts(pipe, texts)
    rows = config.batch_size  # rows stay grouped: instance x batch_size, then class x batch_size
    params = [p for p in pipe.transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        fused=device.startswith(("cpu", "cuda")),
    )
    instances = encode_latents(pipe, [im.image for im in instance_images], resolution, device)
    masks = [im.mask for im in instance_images]
    size = tuple(instances.shape[-2:])  # the patch grid: the loss is weighted per patch
    weights = alpha_weights(masks, resolution, size, config.background_weight) if config.masked_loss else None
    return KleinRun(
        config=config,
        transformer=pipe.transformer,
        instances=instances,
        weights=weights,
        classes=encode_latents(pipe, class_images, resolution, device) if class_images else None,
        embeds=embeds.repeat_interleave(rows, dim=0),
        text_ids=text_ids.repeat_interleave(rows, dim=0),
        schedule=FlowMatchingSchedule(pipe.scheduler.config, device),
        params=params,
        optimizer=optimizer,
        generator=torch.Generator("cpu").manual_seed(config.seed),
    )


def add_lora(pipe, config: TrainConfig) -> Adapters:
    """Freeze every component; add the product LoRA (float32) to the transformer."""
    import torch
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    for module in (pipe.vae, pipe.text_encoder, pipe.transformer):
        module.requires_grad_(False)
    lora_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.lora_alpha,
        init_lora_weights="gaussian",
        target_modules=lora_targets(pipe.transformer),
    )
    pipe.transformer.add_adapter(lora_config, adapter_name=ADAPTER)
    cast_training_params(pipe.transformer, dtype=torch.float32)
    return Adapters({"transformer": pipe.transformer}, {"transformer": lora_config})


def train_klein_lora(
    pipe,
    instance_images: list[TrainingImage] | list[Image.Image],
    class_images: list[Image.Image],
    *,
    prompts: ProductPrompts,
    config: TrainConfig,
    out_dir: Path,
) -> tuple[Path, list[float]]:
    """Train the product LoRA on a klein pipeline; write ``pytorch_lora_weights.safetensors`` to ``out_dir``.

    With ``config.masked_loss`` the instance loss weighs each latent patch by the cutout's alpha (masks of
    :class:`TrainingImage`), the background at ``config.background_weight``.
    The shared pipeline is left as it was found (the adapter is removed). Returns the file and the losses.
    """
    import torch

    resolution = config.resolution_for(pipe)
    if resolution % 16:
        raise ValueError(
            f"resolution {resolution} must be a multiple of 16 for FLUX.2 [klein] (8x VAE, 2x2 patches)"
        )
    if not instance_images:
        raise ValueError("no instance images to train on")
    if config.uses_prior and not class_images:
        raise ValueError("prior preservation is on (prior_images > 0) but there are no class images")
    class_images = class_images if config.uses_prior else []
    instance = [
        im if isinstance(im, TrainingImage) else TrainingImage(im.convert("RGB")) for im in instance_images
    ]
    torch.manual_seed(config.seed)  # peft's initial LoRA weights
    lora = add_lora(pipe, config)
    try:
        run = prepare_run(pipe, instance, class_images, prompts, config, resolution)
        losses: list[float] = []
        pipe.transformer.train()
        for step in range(config.steps):
            loss = step_loss(run)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise ValueError(
                    f"loss became {value} at step {step}; lower learning_rate ({config.learning_rate})"
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(run.params, config.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
            losses.append(value)
        meta = lora_metadata(pipe, config, prompts, resolution, None)
        lora_file, _ = save_lora(pipe, lora, out_dir, meta)
    finally:
        pipe.transformer.eval()
        pipe.transformer.delete_adapters(ADAPTER)
    return lora_file, losses
