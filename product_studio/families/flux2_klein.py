"""FLUX.2 [klein]: a flow-matching transformer with a Qwen3 text encoder, its own inpainter that takes the
seller's cutout as a reference image, LoRA targets and preset values from diffusers' klein script."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from product_studio.families.base import Family

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from PIL import Image

# diffusers' train_dreambooth_lora_flux2_klein.py trains rank 4 (alpha 4) on the attention projections of
# both kinds of block by default ("single.attn.to_out": each single-stream block's output projection); its
# --lora_layers adds the text stream's attention projections and both streams' feed-forward layers.
ATTENTION = ["to_k", "to_q", "to_v", "to_out.0", "to_qkv_mlp_proj", "single.attn.to_out"]
ATTENTION_MLP = [
    *ATTENTION,
    *["add_k_proj", "add_q_proj", "add_v_proj", "to_add_out"],
    *["ff.linear_in", "ff.linear_out", "ff_context.linear_in", "ff_context.linear_out"],
]
TARGETS: dict[str, list[str]] = {"fine-detail": ATTENTION_MLP, "person": ATTENTION_MLP}


@dataclass(frozen=True)
class KleinFamily(Family):
    def native_resolution(self, pipe: DiffusionPipeline) -> int:
        """Its transformer has no sample size: its VAE's config says it (1024 for klein 4B)."""
        return int(pipe.vae.config.sample_size)

    def inpainting_pipeline(self, pipe: DiffusionPipeline) -> DiffusionPipeline:
        """``Flux2KleinInpaintPipeline`` on the same components (diffusers' ``AutoPipelineForInpainting``
        has no klein entry)."""
        from diffusers import Flux2KleinInpaintPipeline

        return Flux2KleinInpaintPipeline.from_pipe(pipe)

    @property
    def takes_reference_image(self) -> bool:
        return True

    @property
    def takes_reference_images(self) -> bool:
        return True

    def generate_options(self, references: list[Image.Image] | None) -> dict[str, Any]:
        """The subject's reference images (``Flux2KleinPipeline(image=[...])``; BFL documents up to 4 for
        klein): the product rendered in a new scene with no training at all."""
        return {"image": references} if references else {}

    def inpaint_options(self, reference: Image.Image | None) -> dict[str, Any]:
        """The reference image, and the whole mask repainted (klein's inpainter keeps some of the canvas by
        default, strength 0.8; SD's repaints the mask fully)."""
        return {"strength": 1.0, "image_reference": reference}

    def prompt_args(
        self, pipe: DiffusionPipeline, prompt: str, negative: str | None, count: int, guidance_scale: float
    ) -> dict[str, Any]:
        """klein's pipelines take no negative prompt text, only its embeddings (used when the guidance scale
        is above 1): they are encoded here with the pipeline's own ``encode_prompt``."""
        args: dict[str, Any] = {"prompt": [prompt] * count}
        if negative and guidance_scale > 1:
            import torch

            with torch.no_grad():
                args["negative_prompt_embeds"] = pipe.encode_prompt([negative] * count)[0]
        return args

    def training_refusals(self, options: dict[str, Any], resolution: int) -> list[str]:
        found = super().training_refusals(options, resolution)
        if options.get("noise_offset"):
            found.append(
                f"noise_offset={options['noise_offset']} is not supported on a FLUX.2 [klein] base model "
                "(flow matching has no noise offset): set PRODUCT_STUDIO_TRAIN__NOISE_OFFSET=0"
            )
        return found

    def lora_targets(self, pipe: DiffusionPipeline, preset: str | None) -> list[str]:
        """The transformer modules a preset's LoRA adapts (the script's default without a preset)."""
        singles = len(pipe.transformer.single_transformer_blocks)
        return [t for name in TARGETS.get(preset or "", ATTENTION) for t in _expand(name, singles)]


def _expand(target: str, singles: int) -> list[str]:
    # A single-stream block's output projection is a Linear named like the double blocks' ModuleList
    # ``to_out``: name it per block, as diffusers' klein script does.
    if target != "single.attn.to_out":
        return [target]
    return [f"single_transformer_blocks.{i}.attn.to_out" for i in range(singles)]


FLUX2_KLEIN = KleinFamily(
    name="flux2-klein",
    label="FLUX.2 [klein]",
    pipelines=("Flux2KleinPipeline",),
    denoiser="transformer",
    objective="flow-matching",
    render_multiple=16,
    train_multiple=16,
    multiple_why="8x VAE, 2x2 patches",
    # As diffusers' klein script saves them: its loader reads only peft's names and would drop a converted
    # ``lora.down`` key of a double-stream block's attention without an error.
    lora_keys="peft",
    kohya_text_encoders={},
    refused={
        "train_text_encoder": (True, "the transformer alone is trained, as in diffusers' klein script"),
        "export_kohya": (
            True,
            "diffusers has no kohya/ComfyUI converter for FLUX.2 [klein] LoRAs (it converts them in, not "
            "out); pytorch_lora_weights.safetensors holds the LoRA in diffusers key names",
        ),
    },
    # What each preset changes on a klein base (docs/training.md); fields set explicitly still win.
    preset_overrides={
        "object": {"rank": 16},
        "fine-detail": {"rank": 32},
        # klein trains the transformer only (the script has no text-encoder LoRA): capacity goes there.
        "person": {"rank": 64, "train_text_encoder": False},
        "quick": {"rank": 4},  # the script's own default
    },
)
