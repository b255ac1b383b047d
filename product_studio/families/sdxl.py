"""SDXL: two text encoders with size/crop micro-conditioning, rendered on its trained aspect buckets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from product_studio.families.base import Family

# SDXL's trained aspect buckets (width, height) at 1024 px; scaled to other native sizes.
BUCKETS = (
    (1024, 1024),
    (1152, 896),
    (896, 1152),
    (1216, 832),
    (832, 1216),
    (1344, 768),
    (768, 1344),
    (1536, 640),
    (640, 1536),
)


@dataclass(frozen=True)
class SdxlFamily(Family):
    micro_conditioning: bool = True  # its UNet takes the pooled text embedding and size/crop "time ids"
    kohya_text_encoders: dict[str, str] = field(
        default_factory=lambda: {"text_encoder": "lora_te1", "text_encoder_2": "lora_te2"}
    )

    def render_size(self, native: int, aspect: float) -> tuple[int, int]:
        """The trained bucket closest in aspect, scaled to ``native``."""
        w, h = min(BUCKETS, key=lambda b: abs(math.log(b[0] / b[1] / aspect)))
        return self._rounded(w * native / 1024, h * native / 1024)


SDXL = SdxlFamily(
    name="sdxl",
    label="SDXL",
    pipelines=("StableDiffusionXLPipeline",),
    inpainting_pipelines=("StableDiffusionXLInpaintPipeline",),
    text_encoders=("text_encoder", "text_encoder_2"),
)
