"""The DreamBooth objective: masked instance loss + lambda x class-prior loss, with min-SNR weighting, and
the noise schedule's tables it is computed on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def min_snr_weights(snr: torch.Tensor, gamma: float, v_prediction: bool) -> torch.Tensor:
    """Per-sample weights of Min-SNR-gamma (Hang et al. 2023): min(SNR, gamma) / SNR for epsilon targets,
    min(SNR, gamma) / (SNR + 1) for v-prediction."""
    import torch

    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if v_prediction else clipped / snr


def dreambooth_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    instances: int,
    weights: torch.Tensor | None = None,
    sample_weights: torch.Tensor | None = None,
    prior_loss_weight: float = 1.0,
) -> torch.Tensor:
    """Mean squared error over the first ``instances`` samples plus ``prior_loss_weight`` x the rest's.

    ``weights`` (instances, 1, h, w) weight the instance samples' pixels (the cutout's alpha, with a floor
    for the background): the per-sample loss is the weighted mean. ``sample_weights`` (batch,) are
    per-sample factors such as min-SNR weights.
    """
    err = (pred.float() - target.float()).square()
    per_sample = err.mean((1, 2, 3))
    if weights is not None:
        w = weights.to(err.dtype)
        inst = (err[:instances] * w).sum((1, 2, 3)) / (w.sum((1, 2, 3)) * err.shape[1]).clamp_min(1e-8)
        per_sample = per_sample.clone()
        per_sample[:instances] = inst
    if sample_weights is not None:
        per_sample = per_sample * sample_weights
    loss = per_sample[:instances].mean()
    if per_sample.shape[0] > instances:
        loss = loss + prior_loss_weight * per_sample[instances:].mean()
    return loss


class NoiseSchedule:
    """The training noise schedule's per-timestep constants, as tables looked up each step.

    ``noisy_and_target`` equals diffusers' ``DDPMScheduler.add_noise`` and, for v-prediction models, its
    ``get_velocity``.
    """

    def __init__(self, pipe, device: str) -> None:
        import torch
        from diffusers import DDPMScheduler
        from diffusers.training_utils import compute_snr

        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.count = scheduler.config.num_train_timesteps
        self.v_prediction = scheduler.config.prediction_type == "v_prediction"
        alphas = scheduler.alphas_cumprod.to(device, torch.float32)
        self.signal, self.noise = alphas.sqrt(), (1 - alphas).sqrt()
        self.snr = compute_snr(scheduler, torch.arange(self.count)).to(device)

    def noisy_and_target(self, latents, noise, timesteps):
        a = self.signal[timesteps].view(-1, 1, 1, 1)
        b = self.noise[timesteps].view(-1, 1, 1, 1)
        return a * latents + b * noise, (a * noise - b * latents if self.v_prediction else noise)

    def min_snr_weights(self, timesteps, gamma: float):
        return min_snr_weights(self.snr[timesteps], gamma, self.v_prediction)
