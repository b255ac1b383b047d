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
    from diffusers import StableDiffusionPipeline

log = logging.getLogger(__name__)

# Real CLIP BPE: 256 byte tokens, their 256 word-final forms, 48,894 merges, 2 specials = 49,408.
_CLIP_MERGES = 49152 - 256 - 2
_OPEN_CLIP_VOCAB = "open_clip/bpe_simple_vocab_16e6.txt.gz"


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


def build_tiny_model(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny Stable Diffusion (64 px, ~3M parameters) with seeded random weights to ``path``.

    The folder is a normal diffusers pipeline folder: ``StableDiffusionPipeline.from_pretrained(path)``
    loads it. Its images are noise -- it exists so every stage runs for real on a CPU in seconds.
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out = Path(path)
    tok_dir = out / "tokenizer"
    write_clip_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer(vocab=str(tok_dir / "vocab.json"), merges=str(tok_dir / "merges.txt"))
    tokenizer.model_max_length = 77

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    # SD 1.5's own scheduler config, so the tiny model samples and trains like the real one.
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def resolve_dtype(name: str) -> torch.dtype:
    import torch

    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in dtypes:
        raise ValueError(f"dtype {name!r} is not one of {sorted(dtypes)}")
    return dtypes[name]


@lru_cache(maxsize=2)
def load_pipeline(base_model: str, device: str = "cpu", dtype: str = "float32") -> StableDiffusionPipeline:
    """Load a Stable Diffusion pipeline from a hub id or local diffusers folder (cached per process).

    Callers share the returned object: stages that add LoRA weights must unload them when done.
    """
    from diffusers import StableDiffusionPipeline

    local = Path(base_model).expanduser()
    looks_local = local.is_absolute() or base_model.startswith(".") or local.exists()
    if looks_local and not (local / "model_index.json").is_file():
        raise ModelLoadError(
            f"base model {base_model!r} is a path but holds no model_index.json: pass a diffusers "
            "folder (e.g. one written by `product-studio tiny-model PATH`) or a Hugging Face id"
        )
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(local) if looks_local else base_model,
            dtype=resolve_dtype(dtype),
            safety_checker=None,
            requires_safety_checker=False,
        )
    except OSError as exc:
        raise ModelLoadError(
            f"could not load base model {base_model!r}: {exc}. Check the id (and HF_TOKEN for gated "
            "models) or the folder path"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def native_resolution(pipe: StableDiffusionPipeline) -> int:
    """The pixel size a pipeline was trained at (512 for SD 1.5, 64 for the tiny model)."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def model_identity(base_model: str) -> dict[str, str]:
    """A stable description of a base model for cache keys and manifests (id plus weights hash)."""
    import hashlib

    local = Path(base_model).expanduser()
    if (local / "model_index.json").is_file():
        digest = hashlib.sha256()
        for f in sorted(local.rglob("*")):
            if f.is_file() and f.suffix in {".json", ".safetensors", ".bin", ".txt"}:
                digest.update(f.relative_to(local).as_posix().encode())
                digest.update(f.read_bytes())
        return {"id": base_model, "revision": "sha256:" + digest.hexdigest()[:16]}
    return {"id": base_model, "revision": "main"}
