"""The flow-matching objective of FLUX-family training, as diffusers' FLUX.2 [klein] DreamBooth script
uses it.

Timesteps: ``u`` drawn by ``compute_density_for_timestep_sampling`` (``weighting_scheme`` ``none``, the
script's default: uniform), indexing the training scheduler's own timestep and sigma tables. Noise is added
along the straight path ``x_t = (1 - sigma) x + sigma noise``; the model predicts the velocity ``noise - x``;
each sample's loss is weighted by ``compute_loss_weighting_for_sd3`` (all ones for ``none``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

WEIGHTING_SCHEMES = ("none", "logit_normal", "mode", "cosmap", "sigma_sqrt")


class FlowMatchingSchedule:
    """A flow-matching scheduler's training tables: draw timesteps and sigmas, add noise, weight samples."""

    def __init__(
        self,
        scheduler_config,
        device: str,
        *,
        weighting_scheme: str = "none",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        mode_scale: float = 1.29,
    ) -> None:
        import torch
        from diffusers import FlowMatchEulerDiscreteScheduler

        if weighting_scheme not in WEIGHTING_SCHEMES:
            raise ValueError(f"weighting_scheme {weighting_scheme!r} is not one of {WEIGHTING_SCHEMES}")
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
        self.count = int(scheduler.config.num_train_timesteps)
        self.timesteps = scheduler.timesteps[: self.count].to(device, torch.float32)
        self.sigmas = scheduler.sigmas[: self.count].to(device, torch.float32)
        self.scheme = weighting_scheme
        self.density = {"logit_mean": logit_mean, "logit_std": logit_std, "mode_scale": mode_scale}

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` timesteps (0-1000, what the transformer reads divided by 1000) and their sigmas."""
        from diffusers.training_utils import compute_density_for_timestep_sampling

        u = compute_density_for_timestep_sampling(self.scheme, n, generator=generator, **self.density)
        index = (u * self.count).long().clamp_max(self.count - 1).to(self.timesteps.device)
        return self.timesteps[index], self.sigmas[index]

    @staticmethod
    def noisy_and_target(
        latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The noised latents on the straight path and the velocity target."""
        s = sigmas.view(-1, *([1] * (latents.ndim - 1))).to(latents.dtype)
        return (1.0 - s) * latents + s * noise, noise - latents

    def sample_weights(self, sigmas: torch.Tensor) -> torch.Tensor:
        """Each sample's loss weight for the scheme (ones for ``none``)."""
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        return compute_loss_weighting_for_sd3(self.scheme, sigmas).float()
