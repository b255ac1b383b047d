"""LoRA files: diffusers' format (``load_lora_weights`` reads it), an optional kohya/A1111 export, and
product metadata (identifier, class noun, base model, rank, alpha, ...) in the safetensors header.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from product_studio.families import family_for, family_named

if TYPE_CHECKING:
    from product_studio.identifiers import ProductPrompts
    from product_studio.training.adapters import Adapters
    from product_studio.training.config import TrainConfig

LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' default name: load_lora_weights(folder) finds it
KOHYA_FILE = "lora_kohya.safetensors"
META_PREFIX = "product_studio."


def lora_metadata(
    pipe, config: TrainConfig, prompts: ProductPrompts, resolution: int, extra: dict[str, str] | None
) -> dict[str, Any]:
    """What the LoRA file's header records about the run."""
    return {
        "family": family_for(pipe).name,
        "rank": config.rank,
        "alpha": config.lora_alpha,
        "steps": config.steps,
        "resolution": resolution,
        "instance_prompt": prompts.instance,
        "class_prompt": prompts.class_prompt,
        "train_text_encoder": config.train_text_encoder,
        "seed": config.seed,
        "identifier": prompts.identifier,
        "class_noun": prompts.class_noun,
        **(extra or {}),
    }


def save_lora(
    pipe, lora: Adapters, out_dir: Path, metadata: dict[str, Any], *, kohya_alpha: int | None = None
) -> tuple[Path, Path | None]:
    """The LoRA in diffusers' format and, given ``kohya_alpha``, a kohya copy too; both files."""
    state = lora.state()
    configs = {n: c.to_dict() for n, c in lora.configs.items()}
    lora_file = save_diffusers_lora(pipe, out_dir, state, configs, metadata)
    if kohya_alpha is None:
        return lora_file, None
    family = str(metadata["family"])
    return lora_file, save_kohya_lora(out_dir / KOHYA_FILE, state, kohya_alpha, family, metadata)


def save_diffusers_lora(
    pipe, out_dir: Path, layers: dict[str, dict], configs: dict[str, dict], metadata: dict[str, Any]
) -> Path:
    """Write the LoRA with the pipeline class's own ``save_lora_weights``; add our metadata.

    SD and SDXL layers are converted to diffusers' key names (their loaders convert back); FLUX.2 [klein]'s
    are kept in peft's (``lora_A``/``lora_B``), as diffusers' klein script saves them: its loader reads only
    those, and would drop a converted ``lora.down`` key of a double-stream block's attention without an
    error.
    """
    from diffusers.utils import convert_state_dict_to_diffusers

    out_dir.mkdir(parents=True, exist_ok=True)
    convert = convert_state_dict_to_diffusers if family_for(pipe).lora_keys == "diffusers" else dict
    kwargs: dict[str, Any] = {}
    for component, state in layers.items():
        kwargs[f"{component}_lora_layers"] = convert(state)
        kwargs[f"{component}_lora_adapter_metadata"] = configs[component]
    type(pipe).save_lora_weights(out_dir, weight_name=LORA_FILE, safe_serialization=True, **kwargs)
    add_metadata(out_dir / LORA_FILE, metadata)
    return out_dir / LORA_FILE


def save_kohya_lora(
    out_path: Path, layers: dict[str, dict], alpha: int, family: str, metadata: dict[str, Any]
) -> Path:
    """The same weights with kohya-ss / AUTOMATIC1111 / ComfyUI key names (``lora_unet_...``)."""
    import torch
    from diffusers.utils import convert_state_dict_to_kohya
    from safetensors.torch import save_file

    te_names = family_named(family).kohya_text_encoders
    out: dict[str, torch.Tensor] = {}
    for component, state in layers.items():
        prefixed = {f"{component}.{k}": v for k, v in state.items()}
        for key, value in convert_state_dict_to_kohya(prefixed).items():
            # diffusers names SD 1.x's single text encoder lora_te1; A1111 wants lora_te.
            if component != "unet":
                key = key.replace("lora_te1", te_names[component], 1).replace(
                    "lora_te2", te_names[component], 1
                )
            out[key] = torch.tensor(float(alpha)) if key.endswith(".alpha") else value.contiguous()
    meta = {"ss_network_module": "networks.lora", "ss_network_alpha": str(alpha)}
    meta.update({f"{META_PREFIX}{k}": str(v) for k, v in metadata.items()})
    save_file(out, str(out_path), metadata=meta)
    return out_path


def add_metadata(path: Path, extra: dict[str, Any]) -> None:
    """Add product metadata to a safetensors file's header (keys prefixed ``product_studio.``)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    meta.update({f"{META_PREFIX}{k}": str(v) for k, v in extra.items()})
    save_file(tensors, str(path), metadata=meta)


def read_metadata(path: Path) -> dict[str, str]:
    """Our metadata from a LoRA file, without the prefix."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {k[len(META_PREFIX) :]: v for k, v in meta.items() if k.startswith(META_PREFIX)}
