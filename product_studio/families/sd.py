"""Stable Diffusion 1.x / 2.x: a UNet, one CLIP text encoder, 8x VAE; every default of :class:`Family`."""

from product_studio.families.base import Family

SD = Family(
    name="sd",
    label="Stable Diffusion",
    pipelines=("StableDiffusionPipeline",),
    inpainting_pipelines=("StableDiffusionInpaintPipeline",),
)
