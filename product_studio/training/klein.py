"""FLUX.2 [klein]: the transformer's DreamBooth objective, one micro-batch at a time (``loop.train_lora``
runs the steps, checkpoints and exports, as for SD).

Reads like diffusers' ``train_dreambooth_lora_flux2_klein.py``: every image encoded once with the VAE (its
mode, patchified 2x2 and batch-normalised with the VAE's running statistics), the instance and class prompts
encoded once, then the flow-matching objective (``flow_matching.py``) with class-prior preservation as its
own loss term. The LoRA's targets and ranks per preset are the family's (``families/flux2_klein.py``);
``adapters.py`` adds it, ``export.py`` saves it with ``Flux2KleinPipeline.save_lora_weights``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps

from product_studio.identifiers import ProductPrompts
from product_studio.training.config import TrainConfig
from product_studio.training.data import TrainingImage, alpha_weights, pixels
from product_studio.training.flow_matching import FlowMatchingSchedule
from product_studio.training.losses import dreambooth_loss

if TYPE_CHECKING:
    import torch


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


def predict(
    transformer, noisy: torch.Tensor, timesteps: torch.Tensor, embeds, text_ids, dtype=None
) -> torch.Tensor:
    """The transformer's velocity prediction for latents (B, C, h, w), in the same layout. ``dtype`` is the
    transformer's (``transformer.dtype`` walks every module: the loop reads it once and passes it)."""
    from diffusers import Flux2KleinPipeline

    dtype = dtype or transformer.dtype
    ids = Flux2KleinPipeline._prepare_latent_ids(noisy).to(noisy.device)
    packed = Flux2KleinPipeline._pack_latents(noisy)
    pred = transformer(
        hidden_states=packed.to(dtype),
        timestep=(timesteps / 1000).to(dtype),
        guidance=None,  # klein has no guidance embedding
        encoder_hidden_states=embeds.to(dtype),
        txt_ids=text_ids,
        img_ids=ids,
        return_dict=False,
    )[0]
    return Flux2KleinPipeline._unpack_latents_with_ids(pred[:, : packed.shape[1]], ids)


@dataclass
class KleinObjective:
    """What the steps need, prepared once: latents, fixed prompt embeddings (instance rows, then class
    rows) and the flow-matching schedule."""

    config: TrainConfig
    transformer: Any
    instances: Any  # (N, C, h, w); with random_flip (2N, ...): images N..2N-1 mirror 0..N-1
    weights: Any | None  # (N or 2N, 1, h, w): the cutouts' alpha with a background floor; None: unmasked
    classes: Any | None  # (M or 2M, C, h, w), None without prior preservation
    embeds: Any  # (batch rows: instance x batch_size, then class x batch_size, L, D)
    text_ids: Any
    schedule: FlowMatchingSchedule
    dtype: Any  # the transformer's, read once

    def batch(self, generator) -> tuple[Any, Any | None]:
        """``batch_size`` random instance latents, then as many class latents; the instances' weights."""
        import torch

        n, copies = self.config.batch_size, 2 if self.config.random_flip else 1

        def pick(count: int):
            index = torch.randint(count // copies, (n,), generator=generator)
            if copies == 2:  # the mirrored copy of half of them, at random
                index = index + torch.randint(2, (n,), generator=generator) * (count // 2)
            return index

        index = pick(len(self.instances))
        picked = [self.instances[index]]
        if self.classes is not None:
            picked.append(self.classes[pick(len(self.classes))])
        return torch.cat(picked), None if self.weights is None else self.weights[index]

    def loss(self, generator, autocast) -> torch.Tensor:
        """One batch's loss: instance flow-matching loss + ``prior_loss_weight`` x the class half's."""
        import torch

        latents, weights = self.batch(generator)
        latents = latents.to(self.embeds.device)
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        timesteps, sigmas = self.schedule.sample(latents.shape[0], generator)
        noisy, target = self.schedule.noisy_and_target(latents, noise, sigmas)
        with autocast:
            pred = predict(self.transformer, noisy, timesteps, self.embeds, self.text_ids, self.dtype)
        return dreambooth_loss(
            pred,
            target,
            instances=self.config.batch_size,
            weights=None if weights is None else weights.to(pred.device),
            sample_weights=self.schedule.sample_weights(sigmas),
            prior_loss_weight=self.config.prior_loss_weight,
        )


def prepare_klein(
    pipe,
    instance_images: list[TrainingImage],
    class_images: list[Image.Image],
    prompts: ProductPrompts,
    config: TrainConfig,
    resolution: int,
    device: str,
) -> KleinObjective:
    """Latents and loss weights of every image, prompt embeddings (computed once), the schedule."""
    texts = [prompts.instance] + ([prompts.class_prompt] if class_images else [])
    embeds, text_ids = encode_prompts(pipe, texts)
    rows = config.batch_size  # rows stay grouped: instance x batch_size, then class x batch_size
    images, masks = [im.image for im in instance_images], [im.mask for im in instance_images]
    if config.random_flip:  # the mirrored copies are encoded once too
        images, class_images = _with_mirrored(images), _with_mirrored(class_images)
        masks = masks + [None if m is None else ImageOps.mirror(m) for m in masks]
    instances = encode_latents(pipe, images, resolution, device)
    size = tuple(instances.shape[-2:])  # the patch grid: the loss is weighted per patch
    weights = alpha_weights(masks, resolution, size, config.background_weight) if config.masked_loss else None
    dtype = pipe.transformer.dtype
    return KleinObjective(
        config=config,
        transformer=pipe.transformer,
        instances=instances,
        weights=None if weights is None else weights.to(device),
        classes=encode_latents(pipe, class_images, resolution, device) if class_images else None,
        embeds=embeds.repeat_interleave(rows, dim=0).to(dtype),
        text_ids=text_ids.repeat_interleave(rows, dim=0),
        schedule=FlowMatchingSchedule(pipe.scheduler.config, device),
        dtype=dtype,
    )


def _with_mirrored(images: list[Image.Image]) -> list[Image.Image]:
    return images + [ImageOps.mirror(im) for im in images]
