"""A warm worker's LoRA slot: one adapter kept in the denoiser, each SKU's LoRA swapped into it in place.

Opt-in (``PRODUCT_STUDIO_RENDER__COMPILE=true``), for GPU workers that render one SKU after another. The
first SKU's LoRA is loaded into the slot after diffusers' ``enable_lora_hotswap(target_rank=...)`` and the
denoiser is compiled once (``torch.compile``); every later SKU's LoRA is copied into the same tensors
(``load_lora_weights(..., hotswap=True)``), so no SKU recompiles. Between SKUs the slot's weight is 0: the
pipeline then is the base model exactly (class priors), and the trainer's own adapter is the only active one
while it trains (a test compares both with a fresh pipeline, bit for bit).

The compiled denoiser is put in the pipeline only while cards render; training and class priors run the
plain module, whose adapters change per SKU. A LoRA the slot cannot take (a trained text encoder, which
diffusers cannot hot-swap, or a rank above the slot's) is loaded beside it the ordinary way for that SKU,
uncompiled: slower, never wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from product_studio.models import denoiser_name

log = logging.getLogger(__name__)

SLOT_ADAPTER = "sku-slot"  # not the trainer's adapter name: both live in the denoiser while an SKU trains
_ATTR = "_product_studio_lora_slot"


@dataclass
class LoraSlot:
    """The slot of one pipeline: its largest rank, how the denoiser is compiled, and what is loaded."""

    rank: int
    compile: bool
    backend: str
    compiled: Any = None  # the compiled denoiser, made at the first swap
    loaded: bool = False  # a LoRA has been loaded into the slot (the next one hot-swaps)
    swapped_in: bool = False  # a block is rendering with the slot's LoRA
    compiles: int = 0  # times the denoiser was compiled (once per worker)


def keep_lora_slot(pipe: Any, rank: int, *, compile: bool = True, backend: str = "inductor") -> LoraSlot:
    """Give ``pipe`` a LoRA slot of up to ``rank`` (idempotent: a pipeline from the process cache keeps its
    slot); call before any LoRA is loaded for rendering."""
    slot = getattr(pipe, _ATTR, None)
    if slot is None:
        pipe.enable_lora_hotswap(target_rank=rank)
        slot = LoraSlot(rank=rank, compile=compile, backend=backend)
        setattr(pipe, _ATTR, slot)
    return slot


def lora_slot(pipe: Any) -> LoraSlot | None:
    """``pipe``'s slot, or None for a pipeline that loads and unloads each LoRA."""
    return getattr(pipe, _ATTR, None)


def plain_denoiser(pipe: Any) -> Any:
    """The denoiser itself, also while its compiled wrapper is in the pipeline."""
    module = getattr(pipe, denoiser_name(pipe))
    return getattr(module, "_orig_mod", module)


def unswappable(lora_file: Path, rank: int) -> str | None:
    """Why the slot cannot take this LoRA file (text-encoder weights, a rank above ``rank``), or None."""
    from safetensors import safe_open

    with safe_open(str(lora_file), "pt") as f:
        keys = list(f.keys())
        if any(k.startswith(("text_encoder", "te_", "lora_te")) for k in keys):
            return "it trains the text encoder too, which diffusers cannot hot-swap"
        ranks = [f.get_slice(k).get_shape()[0] for k in keys if "lora_A" in k or "lora_down" in k]
    if ranks and max(ranks) > rank:
        return f"its rank {max(ranks)} is above PRODUCT_STUDIO_RENDER__COMPILE_MAX_RANK={rank}"
    return None


@contextmanager
def slot_lora(pipe: Any, slot: LoraSlot, lora_file: Path) -> Iterator[bool]:
    """Swap ``lora_file`` into the slot and put the compiled denoiser in place for the block; yields False
    (and changes nothing) when the slot cannot take the file: the caller loads it the ordinary way."""
    import torch

    why = unswappable(lora_file, slot.rank)
    if why is not None:
        log.warning("LoRA %s is loaded without the slot (uncompiled, this SKU only): %s", lora_file, why)
        yield False
        return
    name = denoiser_name(pipe)
    plain = plain_denoiser(pipe)
    pipe.load_lora_weights(
        str(lora_file.parent), weight_name=lora_file.name, adapter_name=SLOT_ADAPTER, hotswap=slot.loaded
    )
    slot.loaded = True
    if slot.compile and slot.compiled is None:
        slot.compiled = torch.compile(plain, backend=slot.backend)
        slot.compiles += 1
    plain.set_adapters([SLOT_ADAPTER], weights=[1.0])
    if slot.compiled is not None:
        setattr(pipe, name, slot.compiled)
    slot.swapped_in = True
    try:
        yield True
    finally:
        slot.swapped_in = False
        setattr(pipe, name, plain)
        plain.set_adapters([SLOT_ADAPTER], weights=[0.0])  # the base model exactly, until the next swap


def scale_slot(pipe: Any, weight: float) -> bool:
    """Scale the slot's LoRA while it renders; False when ``pipe`` is not rendering through its slot."""
    slot = lora_slot(pipe)
    if slot is None or not slot.swapped_in:
        return False
    plain_denoiser(pipe).set_adapters([SLOT_ADAPTER], weights=[weight])
    return True
