"""What every model family says about itself (:class:`Family`), with the behaviour SD 1.x/2.x has; the other
families override what differs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from PIL import Image


@dataclass(frozen=True)
class Family:
    """A base model family: recognition, components, sizes, rendering and training choices."""

    name: str  # as manifests, LoRA headers and run keys record it
    label: str  # for people
    pipelines: tuple[str, ...]  # the text-to-image pipeline classes a base model may name
    inpainting_pipelines: tuple[str, ...] = ()  # dedicated inpainting checkpoints it can use
    denoiser: str = "unet"  # the component its LoRA adapts
    text_encoders: tuple[str, ...] = ("text_encoder",)
    micro_conditioning: bool = False  # SDXL: pooled text embedding and size/crop "time ids"
    # The trainer's objective (training.loop.OBJECTIVES): noise prediction (SD, SDXL) or flow matching.
    objective: Literal["noise-prediction", "flow-matching"] = "noise-prediction"
    render_multiple: int = 8  # the VAE's 8x (and klein's 2x2 latent patches: 16)
    train_multiple: int = 8
    multiple_why: str = "8x VAE"
    # LoRA key names in pytorch_lora_weights.safetensors: diffusers' own (SD, SDXL) or peft's (klein).
    lora_keys: Literal["diffusers", "peft"] = "diffusers"
    # kohya / A1111 / ComfyUI names of its text encoders' LoRA; empty: no kohya export for this family.
    kohya_text_encoders: dict[str, str] = field(default_factory=lambda: {"text_encoder": "lora_te"})
    # Training options this family cannot honour: field -> (refused value, why).
    refused: dict[str, tuple[Any, str]] = field(default_factory=dict)
    # What each training preset sets differently on this family (fields set explicitly still win).
    preset_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def all_pipelines(self) -> tuple[str, ...]:
        return (*self.pipelines, *self.inpainting_pipelines, *self.derived_pipelines)

    @property
    def derived_pipelines(self) -> tuple[str, ...]:
        """Pipelines diffusers builds from a base pipeline (``from_pipe``) that stay in this family."""
        return tuple(p.replace("Pipeline", "InpaintPipeline") for p in self.pipelines)

    # --- sizes -------------------------------------------------------------------------------------------

    def native_resolution(self, pipe: DiffusionPipeline) -> int:
        """The pixel size the model was trained at (512 for SD 1.5, 64 for the tiny models)."""
        return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)

    def render_size(self, native: int, aspect: float) -> tuple[int, int]:
        """The size to render an image of ``aspect`` at: about ``native`` squared pixels, in multiples of
        ``render_multiple``."""
        return self._rounded(native * math.sqrt(aspect), native / math.sqrt(aspect))

    def _rounded(self, w: float, h: float) -> tuple[int, int]:
        step = self.render_multiple
        return max(step, round(w / step) * step), max(step, round(h / step) * step)

    # --- rendering ---------------------------------------------------------------------------------------

    def inpainting_pipeline(self, pipe: DiffusionPipeline) -> DiffusionPipeline:
        """An inpainting pipeline on ``pipe``'s own components (and LoRA)."""
        from diffusers import AutoPipelineForInpainting

        return AutoPipelineForInpainting.from_pipe(pipe)

    def inpaint_options(self, reference: Image.Image | None) -> dict[str, Any]:
        """Extra arguments of its inpainter: none for SD and SDXL (they take no reference image)."""
        return {}

    @property
    def takes_reference_image(self) -> bool:
        """Its inpainter is shown the seller's cutout (``inpaint_options``' ``reference``)."""
        return False

    @property
    def takes_reference_images(self) -> bool:
        """Its text-to-image pipeline takes reference images of the subject (zero-shot, no LoRA needed)."""
        return False

    def generate_options(self, references: list[Image.Image] | None) -> dict[str, Any]:
        """Extra arguments of its text-to-image pipeline: none for SD and SDXL."""
        return {}

    def prompt_args(
        self, pipe: DiffusionPipeline, prompt: str, negative: str | None, count: int, guidance_scale: float
    ) -> dict[str, Any]:
        """The prompt arguments of ``count`` images: ``prompt`` and ``negative_prompt`` text."""
        return {"prompt": [prompt] * count, "negative_prompt": [negative] * count if negative else None}

    # --- training ----------------------------------------------------------------------------------------

    def lora_targets(self, pipe: DiffusionPipeline, preset: str | None) -> list[str]:
        """The denoiser modules its LoRA adapts: the attention projections (diffusers' DreamBooth script)."""
        return ["to_k", "to_q", "to_v", "to_out.0"]

    def preset_values(self, preset: str | None) -> dict[str, Any]:
        """The fields ``preset`` sets differently on this family."""
        return dict(self.preset_overrides.get(preset or "", {}))

    def training_refusals(self, options: dict[str, Any], resolution: int) -> list[str]:
        """Why this family cannot train with these options (``TrainConfig`` fields) at ``resolution``, each
        naming the setting to change; empty when it can."""
        found = []
        if resolution % self.train_multiple:
            found.append(
                f"resolution {resolution} must be a multiple of {self.train_multiple} for {self.label} "
                f"({self.multiple_why}): set PRODUCT_STUDIO_TRAIN__RESOLUTION (or --resolution) to one"
            )
        for name, (value, why) in self.refused.items():
            if options.get(name) == value:
                found.append(
                    f"{name}={value} is not supported on a {self.label} base model ({why}): unset "
                    f"PRODUCT_STUDIO_TRAIN__{name.upper()} (or its flag)"
                )
        return found
