"""Tiny Stable Diffusion and SDXL folders with seeded random weights, for tests, the demo and benchmarks.

``build_tiny_model`` writes a real diffusers pipeline folder (UNet, VAE, CLIP text encoder(s), scheduler,
the real CLIP BPE tokenizer) at toy size, so every stage runs through exactly the ``from_pretrained`` path a
real checkpoint takes -- on a CPU, in seconds, without downloading anything.
"""

from __future__ import annotations

import gzip
import json
from importlib import metadata
from pathlib import Path

# Real CLIP BPE: 256 byte tokens, their 256 word-final forms, 48,894 merges, 2 specials = 49,408.
_CLIP_MERGES = 49152 - 256 - 2
_OPEN_CLIP_VOCAB = "open_clip/bpe_simple_vocab_16e6.txt.gz"
FAMILIES = ("sd", "sdxl", "sd-inpaint")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte-to-printable-character table (the BPE's alphabet)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def clip_bpe_source() -> Path:
    """Path of the real CLIP BPE merges file shipped in the MIT-licensed ``open_clip_torch`` wheel."""
    try:
        dist = metadata.distribution("open_clip_torch")
    except metadata.PackageNotFoundError as exc:
        raise ImportError(
            "the tiny test model needs the CLIP BPE vocabulary from the 'open_clip_torch' package: "
            "pip install --no-deps open_clip_torch==3.3.0"
        ) from exc
    path = Path(str(dist.locate_file(_OPEN_CLIP_VOCAB)))
    if not path.is_file():
        raise ImportError(f"open_clip_torch is installed but {_OPEN_CLIP_VOCAB} is missing at {path}")
    return path


def write_clip_tokenizer_files(out_dir: Path) -> None:
    """Convert open_clip's BPE file into the ``vocab.json`` + ``merges.txt`` that CLIPTokenizer reads."""
    lines = gzip.decompress(clip_bpe_source().read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _CLIP_MERGES + 1]]
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [t + "</w>" for t in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    merges_text = "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"
    (out_dir / "merges.txt").write_text(merges_text, encoding="utf-8")


def _clip_tokenizer(folder: Path):
    """The real CLIP BPE tokenizer, its files written to ``folder``."""
    from transformers import CLIPTokenizer

    write_clip_tokenizer_files(folder)
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    tokenizer.model_max_length = 77
    return tokenizer


def _tiny_text(tokenizer) -> dict:
    """A 2-layer, 32-wide CLIP text encoder's settings for ``tokenizer``."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def build_tiny_model(path: str | Path, seed: int = 0, family: str = "sd") -> Path:
    """Write a tiny Stable Diffusion (``family="sd"``), SDXL (``"sdxl"``) or SD inpainting model
    (``"sd-inpaint"``: a 9-channel UNet, otherwise the tiny SD's shapes, so its LoRA fits) with seeded random
    weights.

    The folder is a normal diffusers pipeline folder that ``from_pretrained`` loads. The shapes follow the
    real families at toy width: a VAE that downsamples 8x (64 px -> 8x8 latents, as 512 px -> 64x64), a
    UNet with cross-attention, the real CLIP BPE tokenizer; for SDXL two text encoders (the second with a
    projection), pooled-text and size micro-conditioning. Its images are noise -- it exists so every stage
    runs for real on a CPU in seconds.
    """
    import torch
    from diffusers import (
        EulerDiscreteScheduler,
        PNDMScheduler,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if family not in FAMILIES:
        raise ValueError(f"model family {family!r} is not one of {FAMILIES}")
    out = Path(path)
    tokenizer = _clip_tokenizer(out / "tokenizer")
    sdxl = family == "sdxl"
    inpaint = family == "sd-inpaint"  # a dedicated inpainting checkpoint: latents + mask + masked latents

    torch.manual_seed(seed)
    text_config = CLIPTextConfig(projection_dim=32, **_tiny_text(tokenizer))
    unet = _tiny_unet(sdxl, inpaint, text_config.projection_dim)
    vae = _tiny_vae(sdxl)
    # The real families' scheduler configs, so the tiny models sample and train like the real ones.
    betas = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}
    if sdxl:
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=CLIPTextModel(text_config),
            text_encoder_2=CLIPTextModelWithProjection(text_config),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=EulerDiscreteScheduler(timestep_spacing="leading", **betas),
        )
    else:
        pipe = (StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline)(
            vae=vae,
            text_encoder=CLIPTextModel(text_config),
            tokenizer=tokenizer,
            unet=unet,
            scheduler=PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, **betas),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def _tiny_unet(sdxl: bool, inpaint: bool, projection_dim: int):
    """A two-level UNet with cross-attention; SDXL's extra conditioning; 9 input channels to inpaint."""
    from diffusers import UNet2DConditionModel

    unet_extra: dict = {}
    if sdxl:  # pooled text (32) + six size/crop numbers embedded at 8 each = 80 extra conditioning inputs
        unet_extra = {
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 6 * 8 + projection_dim,
            "use_linear_projection": True,
        }
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=9 if inpaint else 4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64 if sdxl else 32,  # SDXL: both encoders' hidden states side by side
        attention_head_dim=8,
        norm_num_groups=32,
        **unet_extra,
    )


def _tiny_vae(sdxl: bool):
    """A VAE that downsamples 8x, as the real ones do."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(32, 32, 64, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=0.13025 if sdxl else 0.18215,
    )


def build_tiny_upscaler(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny SD x4 upscaler (``StableDiffusionUpscalePipeline``) with seeded random weights.

    The real one's shapes at toy width: a VAE that downsamples 4x with its 0.08333 scaling, a UNet that takes
    the noisy latents and the low-resolution image (7 channels) and the noise level as a class label.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    out = Path(path)
    tokenizer = _clip_tokenizer(out / "tokenizer")
    torch.manual_seed(seed)
    text = CLIPTextModel(CLIPTextConfig(**_tiny_text(tokenizer)))
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=7,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
        num_class_embeds=1000,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        scaling_factor=0.08333,
    )
    pipe = StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=DDPMScheduler(num_train_timesteps=1000),
        scheduler=DDIMScheduler(num_train_timesteps=1000, prediction_type="v_prediction"),
        max_noise_level=350,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_encoders(path: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write tiny DINO (``PATH/dino``: a ViT) and CLIP (``PATH/clip``) folders with seeded random weights.

    Real transformers classes and processors at toy size (64 px images, 16 px patches, the real CLIP BPE), so
    scoring runs through exactly the ``from_pretrained`` path that ``facebook/dino-vits16`` and an OpenAI CLIP
    take. Their numbers mean nothing; the protocol runs.
    """
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    out = Path(path)
    tokenizer = _clip_tokenizer(out / "clip-tokenizer-files")
    torch.manual_seed(seed)
    small = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}
    dino = ViTModel(ViTConfig(image_size=64, patch_size=16, **small), add_pooling_layer=False)
    dino.save_pretrained(out / "dino")
    ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(out / "dino")
    vision = {"image_size": 64, "patch_size": 16, **small}
    clip = CLIPModel(CLIPConfig(text_config=_tiny_text(tokenizer), vision_config=vision, projection_dim=32))
    clip.save_pretrained(out / "clip")
    processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(out / "clip")
    return out / "dino", out / "clip"
