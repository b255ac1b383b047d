"""Text conditioning for SD 1.x/2.x and SDXL, through the pipeline's own ``encode_prompt``.

SDXL also needs the pooled text embedding and its size/crop micro-conditioning ("time ids"): images are
squared to the training resolution with no crop offset, so the ids are (res, res, 0, 0, res, res).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from product_studio.families import family_for

if TYPE_CHECKING:
    import torch


class PromptConditioner:
    """Encodes prompts for the UNet; with a frozen text encoder the result is computed once and reused."""

    def __init__(self, pipe, resolution: int, device: str) -> None:
        self.pipe = pipe
        self.family = family_for(pipe)
        self.resolution = resolution
        self.device = device

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, dict[str, Any] | None]:
        """Hidden states (B, 77, D) and, for SDXL, the added conditioning kwargs."""
        import torch

        if not self.family.micro_conditioning:
            hidden, _ = self.pipe.encode_prompt(prompts, self.device, 1, False)
            return hidden, None
        hidden, _, pooled, _ = self.pipe.encode_prompt(
            prompts, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        r = self.resolution
        time_ids = torch.tensor([[r, r, 0, 0, r, r]] * len(prompts), dtype=hidden.dtype, device=hidden.device)
        return hidden, {"text_embeds": pooled, "time_ids": time_ids}


def repeat(cond: tuple[torch.Tensor, dict[str, Any] | None], n: int):
    """Each of a batch of encoded prompts ``n`` times (rows stay grouped: a,a,b,b)."""
    hidden, extra = cond
    hidden = hidden.repeat_interleave(n, dim=0)
    if extra is not None:
        extra = {k: v.repeat_interleave(n, dim=0) for k, v in extra.items()}
    return hidden, extra
