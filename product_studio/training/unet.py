"""SD 1.x/2.x and SDXL: the UNet's DreamBooth objective, one micro-batch at a time.

Like diffusers' ``train_dreambooth_lora.py``: sample latents, noise and timesteps, add the noise, predict,
take the loss (instance + prior). Every image was encoded with the VAE once (its latent distribution; a
fresh latent is still sampled each step) and, with a frozen text encoder, the prompts too; on top: the
masked loss from the cutout's alpha, min-SNR weighting and the noise offset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from product_studio.identifiers import ProductPrompts
from product_studio.training.conditioning import PromptConditioner, repeat
from product_studio.training.config import TrainConfig
from product_studio.training.data import LatentSet, TrainingImage, encode_training_latents
from product_studio.training.losses import NoiseSchedule, dreambooth_loss


@dataclass
class UNetObjective:
    """What a UNet's steps need, prepared once: latents, prompt embeddings, the noise schedule."""

    config: TrainConfig
    unet: Any
    device: str
    dtype: Any  # the frozen weights' dtype
    instances: LatentSet
    classes: LatentSet | None  # the class images' latents; None without prior preservation
    encode_prompts: Callable[[], tuple[Any, Any]]  # (hidden states, SDXL extras) for one step's batch
    fixed_prompts: tuple[Any, Any] | None  # the same, computed once when the text encoders are frozen
    schedule: NoiseSchedule
    latent_scale: float

    def prompt_embeds(self) -> tuple[Any, Any]:
        """The text conditioning of one step's batch: (hidden states, SDXL's extras or None)."""
        return self.fixed_prompts if self.fixed_prompts is not None else self.encode_prompts()

    def sample_latents(self, generator) -> tuple[Any, Any]:
        """Fresh latents of ``batch_size`` instance images, then as many class images; the instance
        images' pixel weights (the cutout's alpha with a background floor, or None)."""
        import torch

        def pick(images: LatentSet):
            index = torch.randint(images.count, (self.config.batch_size,), generator=generator)
            flip = self.config.random_flip
            mirrored = torch.randint(2, index.shape, generator=generator).bool() if flip else None
            return images.pick(index, mirrored, generator, self.latent_scale)

        latents, weights = pick(self.instances)
        if self.classes is not None:
            latents = torch.cat([latents, pick(self.classes)[0]])
        return latents, weights

    def sample_noise(self, shape: tuple[int, ...], generator) -> Any:
        """Gaussian noise, plus the per-channel ``noise_offset`` when set."""
        import torch

        noise = torch.randn(shape, generator=generator)
        if self.config.noise_offset:
            noise += self.config.noise_offset * torch.randn((*shape[:2], 1, 1), generator=generator)
        return noise.to(self.device)

    def loss(self, generator, autocast) -> Any:
        """One micro-batch's loss: instance loss + ``prior_loss_weight`` x class-prior loss."""
        import torch

        config = self.config
        # Sample latents: instance images first, then (prior preservation) as many class images.
        latents, pixel_weights = self.sample_latents(generator)
        # Sample the noise to add, and a random timestep for each image.
        noise = self.sample_noise(latents.shape, generator)
        timesteps = torch.randint(0, self.schedule.count, (latents.shape[0],), generator=generator)
        timesteps = timesteps.to(self.device)
        # Add noise by each timestep's magnitude (the forward diffusion process); the target follows the
        # scheduler's prediction type (the noise, or the velocity).
        noisy, target = self.schedule.noisy_and_target(latents, noise, timesteps)
        # Predict.
        hidden, added = self.prompt_embeds()
        with autocast:
            pred = self.unet(noisy.to(self.dtype), timesteps, hidden, added_cond_kwargs=added).sample
        # The loss: instance loss + prior_loss_weight x class-prior loss, each sample min-SNR weighted.
        snr = None if config.snr_gamma is None else self.schedule.min_snr_weights(timesteps, config.snr_gamma)
        return dreambooth_loss(
            pred,
            target,
            instances=config.batch_size,
            weights=pixel_weights,
            sample_weights=snr,
            prior_loss_weight=config.prior_loss_weight,
        )


def prepare_unet(
    pipe,
    instance: list[TrainingImage],
    class_images: list[Image.Image],
    prompts: ProductPrompts,
    config: TrainConfig,
    resolution: int,
    device: str,
) -> UNetObjective:
    """Latents and loss weights of every image, prompt embeddings (once, unless the text encoders train),
    the noise schedule."""
    import torch

    instances, classes = encode_training_latents(pipe.vae, instance, class_images, config, resolution, device)
    conditioner = PromptConditioner(pipe, resolution, device)
    texts = [prompts.instance] + ([prompts.class_prompt] if class_images else [])

    def encode_prompts():
        return repeat(conditioner.encode(texts), config.batch_size)

    fixed = None
    if not config.train_text_encoder:
        with torch.no_grad():
            fixed = encode_prompts()
    return UNetObjective(
        config=config,
        unet=pipe.unet,
        device=device,
        dtype=pipe.unet.dtype,
        instances=instances,
        classes=classes,
        encode_prompts=encode_prompts,
        fixed_prompts=fixed,
        schedule=NoiseSchedule(pipe, device),
        latent_scale=pipe.vae.config.scaling_factor,
    )
