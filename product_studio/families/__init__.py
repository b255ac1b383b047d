"""Model families: what differs between Stable Diffusion 1.x/2.x, SDXL and FLUX.2 [klein], one object each.

Each family (``sd``, ``sdxl``, ``flux2_klein``: a :class:`~product_studio.families.base.Family`) says how it
is recognised (the pipeline classes a ``model_index.json`` names), its denoiser and text encoders, its
native size and the sizes it renders at, its inpainter and whether that takes a reference image, how it
takes a negative prompt, the trainer's objective for it, its LoRA targets and what a preset changes on it,
its LoRA export format and what training on it refuses. The trainer, the renderer and the model loader ask
the family; nothing else compares family names. A new family is one new module here (and its tests).

May import: nothing of the library (a foundation); torch and diffusers only inside methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from product_studio.families.base import Family
from product_studio.families.flux2_klein import FLUX2_KLEIN
from product_studio.families.sd import SD
from product_studio.families.sdxl import SDXL

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

FAMILIES: dict[str, Family] = {f.name: f for f in (SD, SDXL, FLUX2_KLEIN)}


def family_named(name: str) -> Family:
    """The family called ``name`` (as manifests and LoRA headers record it); a ValueError names the
    valid ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; choose one of {sorted(FAMILIES)}") from None


def family_of_class(class_name: str) -> Family | None:
    """The family whose pipelines include ``class_name`` (a ``model_index.json``'s ``_class_name``)."""
    return next((f for f in FAMILIES.values() if class_name in f.all_pipelines), None)


def family_for(pipe: DiffusionPipeline) -> Family:
    """A loaded pipeline's family: by its class, else (a pipeline diffusers built from it under another
    name) SDXL when it has a second text encoder, SD otherwise."""
    known = family_of_class(type(pipe).__name__)
    if known is not None:
        return known
    return SDXL if getattr(pipe, "text_encoder_2", None) is not None else SD
