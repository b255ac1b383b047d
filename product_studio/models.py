"""The one place that loads diffusion pipelines, and the tiny seeded test model.

A base model is a Hugging Face id or a local diffusers folder; both go through ``from_pretrained``.
``build_tiny_model`` writes a real Stable Diffusion folder (UNet, VAE, CLIP text encoder, scheduler,
CLIP BPE tokenizer) at toy size with seeded random weights, so tests and the demo exercise exactly the
code path a real checkpoint takes -- without downloading anything.
"""

from __future__ import annotations

import gzip
import json
import logging
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

log = logging.getLogger(__name__)

# Real CLIP BPE: 256 byte tokens, their 256 word-final forms, 48,894 merges, 2 specials = 49,408.
_CLIP_MERGES = 49152 - 256 - 2
_OPEN_CLIP_VOCAB = "open_clip/bpe_simple_vocab_16e6.txt.gz"
FAMILIES = ("sd", "sdxl")
SUPPORTED_PIPELINES = {"StableDiffusionPipeline", "StableDiffusionXLPipeline"}


class ModelLoadError(RuntimeError):
    """A base model could not be loaded; the message says which and what to do."""


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


def build_tiny_model(path: str | Path, seed: int = 0, family: str = "sd") -> Path:
    """Write a tiny Stable Diffusion (``family="sd"``) or SDXL (``"sdxl"``) with seeded random weights.

    The folder is a normal diffusers pipeline folder that ``from_pretrained`` loads. The shapes follow the
    real families at toy width: a VAE that downsamples 8x (64 px -> 8x8 latents, as 512 px -> 64x64), a
    UNet with cross-attention, the real CLIP BPE tokenizer; for SDXL two text encoders (the second with a
    projection), pooled-text and size micro-conditioning. Its images are noise -- it exists so every stage
    runs for real on a CPU in seconds.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    if family not in FAMILIES:
        raise ValueError(f"model family {family!r} is not one of {FAMILIES}")
    out = Path(path)
    tok_dir = out / "tokenizer"
    write_clip_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer(vocab=str(tok_dir / "vocab.json"), merges=str(tok_dir / "merges.txt"))
    tokenizer.model_max_length = 77
    sdxl = family == "sdxl"

    torch.manual_seed(seed)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    unet_extra: dict = {}
    if sdxl:  # pooled text (32) + six size/crop numbers embedded at 8 each = 80 extra conditioning inputs
        unet_extra = {
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 6 * 8 + text_config.projection_dim,
            "use_linear_projection": True,
        }
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64 if sdxl else 32,  # SDXL: both encoders' hidden states side by side
        attention_head_dim=8,
        norm_num_groups=32,
        **unet_extra,
    )
    vae = AutoencoderKL(
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
        pipe = StableDiffusionPipeline(
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


def model_family(pipe: DiffusionPipeline) -> str:
    """``"sdxl"`` for pipelines with two text encoders, else ``"sd"`` (SD 1.x / 2.x)."""
    return "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd"


def resolve_dtype(name: str) -> torch.dtype:
    import torch

    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in dtypes:
        raise ValueError(f"dtype {name!r} is not one of {sorted(dtypes)}")
    return dtypes[name]


@lru_cache(maxsize=2)
def load_pipeline(base_model: str, device: str = "cpu", dtype: str = "float32") -> DiffusionPipeline:
    """Load a Stable Diffusion or SDXL pipeline from a hub id or local diffusers folder (cached per process).

    Callers share the returned object: stages that add LoRA weights must unload them when done.
    """
    from diffusers import DiffusionPipeline

    local = Path(base_model).expanduser()
    looks_local = local.is_absolute() or base_model.startswith(".") or local.exists()
    if looks_local and not (local / "model_index.json").is_file():
        raise ModelLoadError(
            f"base model {base_model!r} is a path but holds no model_index.json: pass a diffusers "
            "folder (e.g. one written by `product-studio tiny-model PATH`) or a Hugging Face id"
        )
    pipeline_class = DiffusionPipeline
    if looks_local:  # import only the pipeline class the folder names: start-up drops by seconds
        import diffusers

        class_name = json.loads((local / "model_index.json").read_text()).get("_class_name", "")
        if class_name in SUPPORTED_PIPELINES:
            pipeline_class = getattr(diffusers, class_name)
    try:
        # SD 1.x/2.x folders may name a safety checker; cards are reviewed, and SDXL takes no such option.
        no_checker = {"safety_checker": None, "requires_safety_checker": False}
        pipe = pipeline_class.from_pretrained(
            str(local) if looks_local else base_model,
            dtype=resolve_dtype(dtype),
            **({} if pipeline_class.__name__ == "StableDiffusionXLPipeline" else no_checker),
        )
    except OSError as exc:
        raise ModelLoadError(
            f"could not load base model {base_model!r}: {exc}. Check the id (and HF_TOKEN for gated "
            "models) or the folder path"
        ) from exc
    if type(pipe).__name__ not in SUPPORTED_PIPELINES:
        raise ModelLoadError(
            f"base model {base_model!r} is a {type(pipe).__name__}; Product Studio trains "
            f"{' and '.join(sorted(SUPPORTED_PIPELINES))} models (SD 1.x/2.x and SDXL)"
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def native_resolution(pipe: DiffusionPipeline) -> int:
    """The pixel size a pipeline was trained at (512 for SD 1.5, 1024 for SDXL, 64 for the tiny models)."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


_MODEL_FILES = {".json", ".safetensors", ".bin", ".txt"}


@lru_cache(maxsize=8)
def _folder_digest(folder: Path, listing: tuple[tuple[str, int, int], ...]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for rel, _, _ in listing:
        digest.update(rel.encode())
        digest.update((folder / rel).read_bytes())
    return "sha256:" + digest.hexdigest()[:16]


def model_identity(base_model: str) -> dict[str, str]:
    """A stable description of a base model for cache keys and manifests (id plus weights hash).

    A local folder's weights (gigabytes for real models) are hashed once per process and folder state:
    the cache key is every file's name, size and modification time.
    """
    local = Path(base_model).expanduser()
    if (local / "model_index.json").is_file():
        files = sorted(f for f in local.rglob("*") if f.is_file() and f.suffix in _MODEL_FILES)
        listing = tuple(
            (f.relative_to(local).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files
        )
        return {"id": base_model, "revision": _folder_digest(local.resolve(), listing)}
    return {"id": base_model, "revision": "main"}
