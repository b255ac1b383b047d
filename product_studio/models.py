"""The one place that loads diffusion pipelines, and describes them (family, native size, identity).

A base model is a Hugging Face id or a local diffusers folder; both go through ``from_pretrained``. The
tiny seeded models that tests and the demo load through the same path are written by
``product_studio.devkit.tiny_models``.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from product_studio.families import FAMILIES, family_for, family_of_class

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

SUPPORTED_PIPELINES = {p for f in FAMILIES.values() for p in f.pipelines}
# The pipelines each job loads: the base model, a dedicated inpainting checkpoint, an upscaler.
PIPELINES = {
    "text-to-image": SUPPORTED_PIPELINES,
    "inpainting": {p for f in FAMILIES.values() for p in f.inpainting_pipelines},
    "upscaling": {"StableDiffusionUpscalePipeline", "StableDiffusionLatentUpscalePipeline"},
}
_VERB = {"text-to-image": "trains", "inpainting": "inpaints with", "upscaling": "upscales with"}


class ModelLoadError(RuntimeError):
    """A base model could not be loaded; the message says which and what to do."""


def model_family(pipe: DiffusionPipeline) -> str:
    """The name of a loaded pipeline's family (``sd``, ``sdxl``, ``flux2-klein``: ``families``)."""
    return family_for(pipe).name


def denoiser_name(pipe: DiffusionPipeline) -> str:
    """The component a pipeline denoises with, where its LoRA lives: ``transformer`` (FLUX.2 [klein]) or
    ``unet`` (SD, SDXL)."""
    return family_for(pipe).denoiser


def _model_file(base_model: str, name: str) -> Path | None:
    """A file of a model: in its local folder, else in the local Hugging Face cache (nothing is
    downloaded); None when neither has it."""
    local = Path(base_model).expanduser() / name
    if local.is_file():
        return local
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(base_model, name)
    except Exception:  # a malformed id: nothing cached under it
        cached = None
    return Path(cached) if isinstance(cached, str) else None


def pipeline_class_name(base_model: str) -> str | None:
    """The pipeline class a model's ``model_index.json`` names, read from a local folder or the local
    Hugging Face cache (nothing is downloaded); None when neither has it."""
    index = _model_file(base_model, "model_index.json")
    if index is None:
        return None
    return json.loads(index.read_text()).get("_class_name")


def family_of(base_model: str) -> str | None:
    """A base model's family (``sd``, ``sdxl``, ``flux2-klein``) from its ``model_index.json``, without
    loading it; None when the folder or cache does not say."""
    family = family_of_class(pipeline_class_name(base_model) or "")
    return family.name if family else None


# Base models whose licence forbids serving their images commercially (Black Forest Labs' non-commercial
# licences): refused unless PRODUCT_STUDIO_ALLOW_NONCOMMERCIAL_MODELS=true. Compared in lower case.
NONCOMMERCIAL_MODELS = {
    "black-forest-labs/flux.1-dev",
    "black-forest-labs/flux.1-fill-dev",
    "black-forest-labs/flux.1-kontext-dev",
    "black-forest-labs/flux.2-dev",
    "black-forest-labs/flux.2-klein-9b",
    "black-forest-labs/flux.2-klein-base-9b",
}
# Licence ids (normalised by ``licence_id``) a model card uses for non-commercial terms:
# "flux-1-dev-non-commercial-license", "flux-non-commercial-license", Creative Commons' "cc-by-nc-4.0" (also
# written "CC BY-NC 4.0"), "cc-by-nc-sa-4.0", ...
_NONCOMMERCIAL_LICENCE = re.compile(r"non-?commercial|flux-1-dev|(^|-)nc(-|$)")


def licence_id(licence: str) -> str:
    """A licence as a normalised SPDX-like id: lower case, words joined by single hyphens
    (``CC BY-NC 4.0`` -> ``cc-by-nc-4.0``, ``CC_BY_NC`` -> ``cc-by-nc``)."""
    return re.sub(r"[\s_-]+", "-", licence.strip().lower()).strip("-")


def model_licence(base_model: str) -> str | None:
    """The licence a model card states: ``license`` in the card's metadata (its ``license_name`` when that
    is ``other``; several, comma-joined), read by huggingface_hub's own model-card parser from a local folder
    or the local Hugging Face cache (nothing is downloaded); None when there is no card or it names none."""
    front = _model_card(base_model)
    stated = front.get("license")
    licences = [str(x) for x in (stated if isinstance(stated, list) else [stated]) if x]
    if not licences:
        return None
    named = str(front.get("license_name") or "other")
    return ", ".join(named if licence_id(x) == "other" else x for x in licences)


def _model_card(base_model: str) -> dict:
    """The metadata (front matter) of the model's README.md (local folder or cache), or {}: read with
    huggingface_hub's ``metadata_load``, as the hub reads it (after a leading blank line or a UTF-8 BOM)."""
    from huggingface_hub import metadata_load

    card = _model_file(base_model, "README.md")
    if card is None:
        return {}
    try:
        front = metadata_load(card)
    except Exception as exc:  # yaml's errors, bad UTF-8: a card whose licence cannot be read is not trusted
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"the model card {card} cannot be read ({first}); fix its front matter") from None
    return front if isinstance(front, dict) else {}


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_CACHE_SNAPSHOT = re.compile(r"models--([\w.-]+?)--([\w.-]+)/snapshots/")


def public_model_name(base_model: str) -> str:
    """How files the world sees (a card's XMP and C2PA) name a base model, never by a server path: a
    Hugging Face id as it is; a local folder by the hub model it is a cached snapshot of, as "a fine-tune of
    <id>" when its model card names a ``base_model``, else as "a local <family> model"."""
    local = Path(base_model).expanduser()
    if not (local.is_absolute() or base_model.startswith(".") or local.exists()):
        return base_model
    snapshot = _CACHE_SNAPSHOT.search(local.resolve().as_posix() + "/")
    if snapshot:
        return f"{snapshot[1]}/{snapshot[2]}"
    try:
        parent = _model_card(base_model).get("base_model")
    except ValueError:  # an unreadable card names no parent (start-up has refused its licence already)
        parent = None
    parent = parent[0] if isinstance(parent, list) and parent else parent
    if isinstance(parent, str) and _HUB_ID.fullmatch(parent):
        return f"a fine-tune of {parent}"
    family = family_of_class(pipeline_class_name(base_model) or "")
    return f"a local {family.label} model" if family else "a local model"


def public_tool_name(ref: str) -> str:
    """A tool setting (``rembg-onnx:u2net:/models/u2net.onnx``) without the parts that are paths."""
    parts = [p for p in ref.split(":") if p and not re.search(r"[/\\]|^[.~]", p)]
    return ":".join(parts) or "a local model"


def noncommercial_reason(base_model: str, licence: str | None) -> str | None:
    """Why a base model may not make commercial cards (a known id, or its card's licence), or None."""
    if base_model.strip().lower() in NONCOMMERCIAL_MODELS:
        return "published under a non-commercial licence"
    if licence and any(_NONCOMMERCIAL_LICENCE.search(licence_id(x)) for x in licence.split(",")):
        return f"its model card's licence {licence!r} is non-commercial"
    return None


def check_commercial_use(base_model: str, *, allow: bool, setting: str = "PRODUCT_STUDIO_BASE_MODEL") -> str:
    """``base_model`` if it may make commercial cards, or ``allow`` is set; else a one-line ValueError that
    names ``setting`` and the way out."""
    reason = noncommercial_reason(base_model, model_licence(base_model))
    if reason and not allow:
        raise ValueError(
            f"{reason}, not for commercial cards: set {setting} to a commercial-use base model (README: "
            "Choosing a base model), or PRODUCT_STUDIO_ALLOW_NONCOMMERCIAL_MODELS=true if your use is "
            "non-commercial"
        )
    return base_model


def resolve_dtype(name: str) -> torch.dtype:
    import torch

    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in dtypes:
        raise ValueError(f"dtype {name!r} is not one of {sorted(dtypes)}")
    return dtypes[name]


@lru_cache(maxsize=4)
def load_pipeline(
    base_model: str, device: str = "cpu", dtype: str = "float32", *, kind: str = "text-to-image"
) -> DiffusionPipeline:
    """Load a Stable Diffusion, SDXL or FLUX.2 [klein] pipeline from a hub id or local diffusers folder
    (cached per process).

    ``kind`` ``inpainting`` loads a dedicated inpainting checkpoint (SD or SDXL, 9-channel UNet) instead,
    ``upscaling`` diffusers' SD x4 or latent x2 upscaler. Callers share the returned object: stages that add
    LoRA weights must unload them when done.
    """
    supported = PIPELINES[kind]
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
        if class_name in supported:
            pipeline_class = getattr(diffusers, class_name)
    try:
        # SD 1.x/2.x folders may name a safety checker; cards are reviewed, and SDXL takes no such option.
        no_checker = {"safety_checker": None, "requires_safety_checker": False}
        takes_checker = kind != "upscaling" and not any(n in pipeline_class.__name__ for n in ("XL", "Flux2"))
        pipe = pipeline_class.from_pretrained(
            str(local) if looks_local else base_model,
            dtype=resolve_dtype(dtype),
            **(no_checker if takes_checker else {}),
        )
    except OSError as exc:
        raise ModelLoadError(
            f"could not load base model {base_model!r}: {exc}. Check the id (and HF_TOKEN for gated "
            "models) or the folder path"
        ) from exc
    if type(pipe).__name__ not in supported:
        raise ModelLoadError(
            f"model {base_model!r} is a {type(pipe).__name__}; Product Studio "
            f"{_VERB[kind]} {' and '.join(sorted(supported))} models"
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def native_resolution(pipe: DiffusionPipeline) -> int:
    """The pixel size a pipeline was trained at (512 for SD 1.5, 1024 for SDXL and FLUX.2 [klein], 64 for
    the tiny models)."""
    return family_for(pipe).native_resolution(pipe)


_MODEL_FILES = {".json", ".safetensors", ".bin", ".txt"}


@lru_cache(maxsize=8)
def _folder_digest(folder: Path, listing: tuple[tuple[str, int, int], ...]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for rel, _, _ in listing:
        digest.update(rel.encode())
        digest.update((folder / rel).read_bytes())
    return "sha256:" + digest.hexdigest()[:16]


@lru_cache(maxsize=4)
def load_tokenizer(ref: str) -> Any:
    """The (first) tokenizer of a diffusers model, without its weights: enough to choose identifiers."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ref, subfolder="tokenizer")


def model_identity(base_model: str) -> dict[str, str]:
    """A stable description of a model (a diffusers or transformers folder, or a hub id) for cache keys and
    manifests: the id plus a folder's weights hash, or a hub model's commit in the local cache.

    A local folder's weights (gigabytes for real models) are hashed once per process and folder state:
    the cache key is every file's name, size and modification time.
    """
    local = Path(base_model).expanduser()
    if (local / "model_index.json").is_file() or (local / "config.json").is_file():
        files = sorted(f for f in local.rglob("*") if f.is_file() and f.suffix in _MODEL_FILES)
        listing = tuple(
            (f.relative_to(local).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files
        )
        return {"id": base_model, "revision": _folder_digest(local.resolve(), listing)}
    return {"id": base_model, "revision": _hub_revision(base_model)}


def _hub_revision(repo_id: str) -> str:
    """The commit of a hub model's files in the local Hugging Face cache (what a worker actually loaded);
    ``main`` when it is not cached (nothing is downloaded to find out)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True)).name
    except Exception:  # not cached, an offline miss, a malformed id: the name of the branch is all we know
        return "main"


def _local_or_id(ref: str) -> str:
    local = Path(ref).expanduser()
    if local.is_absolute() or ref.startswith(".") or local.exists():
        if not (local / "config.json").is_file():
            raise ModelLoadError(
                f"encoder {ref!r} is a path but holds no config.json (a transformers folder)"
            )
        return str(local)
    return ref


@lru_cache(maxsize=2)
def load_dino(ref: str, device: str = "cpu") -> tuple[Any, Any]:
    """A DINO ViT (``facebook/dino-vits16`` or a folder) and its image processor, once per worker process."""
    from transformers import AutoImageProcessor, AutoModel

    try:
        model = AutoModel.from_pretrained(_local_or_id(ref), add_pooling_layer=False)
        processor = AutoImageProcessor.from_pretrained(_local_or_id(ref))
    except OSError as exc:
        raise ModelLoadError(f"could not load the DINO encoder {ref!r}: {exc}") from exc
    return model.eval().to(device), processor


@lru_cache(maxsize=2)
def load_clip(ref: str, device: str = "cpu") -> tuple[Any, Any]:
    """A CLIP model (an OpenAI CLIP id or a folder) and its processor, once per worker process."""
    from transformers import AutoProcessor, CLIPModel

    try:
        model = CLIPModel.from_pretrained(_local_or_id(ref))
        processor = AutoProcessor.from_pretrained(_local_or_id(ref))
    except OSError as exc:
        raise ModelLoadError(f"could not load the CLIP encoder {ref!r}: {exc}") from exc
    return model.eval().to(device), processor
