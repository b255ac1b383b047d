"""Render: a product in a scene, with the product's LoRA loaded into the shared base pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from product_studio.identifiers import ProductPrompts
from product_studio.models import native_resolution
from product_studio.scenes import SceneTemplate
from product_studio.training.adapters import ADAPTER

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline


@contextmanager
def product_lora(pipe: DiffusionPipeline, lora_file: Path) -> Iterator[DiffusionPipeline]:
    """Load a product LoRA for the duration of a block, then restore the plain base model."""
    pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name, adapter_name=ADAPTER)
    try:
        yield pipe
    finally:
        pipe.unload_lora_weights()


def render_scene(
    pipe: DiffusionPipeline,
    template: SceneTemplate,
    prompts: ProductPrompts,
    *,
    resolution: int | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int | None = None,
) -> tuple[Image.Image, dict[str, Any]]:
    """One scene image and the exact settings that made it (for the manifest).

    ``resolution`` defaults to the pipeline's native size; ``steps``, ``guidance_scale`` and ``seed`` to the
    template's own.
    """
    import torch

    prompt, negative = template.fill(prompts)
    settings: dict[str, Any] = {
        "template": template.id,
        "prompt": prompt,
        "negative_prompt": negative,
        "seed": template.seed if seed is None else seed,
        "steps": steps or template.steps,
        "guidance_scale": template.guidance_scale if guidance_scale is None else guidance_scale,
    }
    size = resolution or native_resolution(pipe)
    image = pipe(
        prompt,
        negative_prompt=negative or None,
        height=size,
        width=size,
        num_inference_steps=settings["steps"],
        guidance_scale=settings["guidance_scale"],
        generator=torch.Generator("cpu").manual_seed(int(settings["seed"])),
    ).images[0]
    return image, settings
