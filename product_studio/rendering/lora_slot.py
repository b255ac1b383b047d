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
uncompiled: slower, never wrong. Every block ends with the pipeline's adapters, scales, ranks and hooks as
it began (checked, :func:`adapter_state`); a worker whose pipeline drifted refuses to render more.
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
# Module hooks a LoRA loader could add and forget (accelerate's offload hooks are the ``_hf_hook`` attribute).
_HOOKS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


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
    broken: str | None = None  # why the pipeline can no longer be trusted (a block left it changed)


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


# A LoRA's down (A) matrices in each layout a file may use: peft's (what klein's save_lora_weights writes),
# diffusers' own (SD/SDXL's save_lora_weights converts to it) and kohya's. The first dimension is the rank.
_DOWN_NAMES = (".lora_A.", ".lora.down.", ".lora_down.")


def unswappable(lora_file: Path, rank: int) -> str | None:
    """Why the slot cannot take this LoRA file (text-encoder weights, a rank above ``rank``, no LoRA
    matrices we recognise), or None.

    Wrong here is silent: peft hot-swaps a larger rank by replacing the slot's tensors with bigger ones
    (``swap_tensors``), so the slot would keep that rank for every later SKU (and a compiled denoiser would
    recompile). A file whose ranks cannot be read is therefore never swapped in.
    """
    from safetensors import safe_open

    with safe_open(str(lora_file), "pt") as f:
        keys = list(f.keys())
        if any(k.startswith(("text_encoder", "te_", "lora_te")) for k in keys):
            return "it trains the text encoder too, which diffusers cannot hot-swap"
        ranks = [f.get_slice(k).get_shape()[0] for k in keys if any(n in k for n in _DOWN_NAMES)]
    if not ranks:
        names = ", ".join(_DOWN_NAMES)
        return f"none of its {len(keys)} keys names a LoRA down matrix ({names}) to read its rank from"
    if max(ranks) > rank:
        return f"its rank {max(ranks)} is above PRODUCT_STUDIO_RENDER__COMPILE_MAX_RANK={rank}"
    return None


def adapter_state(pipe: Any) -> dict[str, Any]:
    """What a LoRA could leave behind in ``pipe``: per model component its adapters and pending slot
    preparation, and per LoRA layer the adapters, active ones, scales, ranks, alphas, merged ones and
    tensor shapes; every module's hooks; the attention processors. Equal before and after a LoRA is
    loaded and removed when the pipeline is exactly as it was (the weights themselves are not read)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    state: dict[str, Any] = {}
    for name, component in pipe.components.items():
        module = getattr(component, "_orig_mod", component)
        if not hasattr(module, "named_modules"):
            continue
        state[f"{name}:adapters"] = sorted(getattr(module, "peft_config", None) or {})
        state[f"{name}:slot preparation"] = getattr(module, "_prepare_lora_hotswap_kwargs", None)
        hooks = []
        for path, sub in module.named_modules():
            found = [len(getattr(sub, h)) for h in _HOOKS]
            if any(found) or hasattr(sub, "_hf_hook"):
                hooks.append((path, *found, type(getattr(sub, "_hf_hook", None)).__name__))
            if isinstance(sub, BaseTunerLayer):
                state[f"{name}:{path}"] = (
                    tuple(sub.active_adapters),
                    sub.disable_adapters,
                    tuple(sub.merged_adapters),
                    {k: float(v) for k, v in getattr(sub, "scaling", {}).items()},
                    dict(getattr(sub, "r", {})),
                    dict(getattr(sub, "lora_alpha", {})),
                    {
                        n: tuple(p.shape)
                        for n, p in sub.named_parameters(recurse=True)
                        if "lora_" in n and not n.startswith("base_layer")
                    },
                )
        state[f"{name}:hooks"] = hooks
        if hasattr(module, "attn_processors"):
            state[f"{name}:processors"] = {k: type(v).__name__ for k, v in module.attn_processors.items()}
    return state


def state_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The entries of two :func:`adapter_state` snapshots that differ, as ``key: before -> after``."""
    return [
        f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    ]


class LoraSlotError(RuntimeError):
    """A LoRA block left the warm pipeline other than it found it: its later SKUs' cards would depend on the
    SKUs it made before, so the worker refuses to render more (restart it)."""


@contextmanager
def slot_lora(pipe: Any, slot: LoraSlot, lora_file: Path, *, adapter_name: str) -> Iterator[bool]:
    """Render a block with ``lora_file``: swapped into the slot, the compiled denoiser in place (yields
    True), or, when the slot cannot take it, loaded beside the slot as ``adapter_name`` for this block only,
    uncompiled (yields False). Either way the block leaves the pipeline's adapters, scales, ranks and hooks
    as it found them (:func:`adapter_state`), or raises :class:`LoraSlotError`."""
    if slot.broken is not None:
        raise LoraSlotError(slot.broken)
    why = unswappable(lora_file, slot.rank)
    # Only the slot's first swap changes the pipeline for good (it adds the slot's adapter).
    before = adapter_state(pipe) if slot.loaded or why is not None else None
    if why is None:
        with _swapped_in(pipe, slot, lora_file):
            yield True
    else:
        log.warning("LoRA %s is loaded without the slot (uncompiled, this SKU only): %s", lora_file, why)
        bare = [name for name, component in pipe.components.items() if not _lora_layers(component)]
        with _slot_preparation_held(pipe):
            pipe.load_lora_weights(
                str(lora_file.parent), weight_name=lora_file.name, adapter_name=adapter_name
            )
        try:
            yield False
        finally:
            pipe.delete_adapters(adapter_name)
            for name in bare:  # a model that had no LoRA layers loses the empty ones the load wrapped it in
                _unwrap(pipe.components[name])
    left = [] if before is None else state_changes(before, adapter_state(pipe))
    if left:
        slot.broken = (
            f"rendering with LoRA {lora_file} left the warm pipeline changed ({'; '.join(left[:5])}"
            f"{f'; and {len(left) - 5} more' if len(left) > 5 else ''}): restart the worker"
        )
        raise LoraSlotError(slot.broken)


def _lora_layers(component: Any) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    modules = getattr(component, "modules", None)
    return sum(isinstance(m, BaseTunerLayer) for m in modules()) if modules is not None else 0


def _unwrap(component: Any) -> None:
    """Take every LoRA layer out of a model, as diffusers' ``unload_lora_weights`` does to each."""
    from diffusers.utils import recurse_remove_peft_layers

    if _lora_layers(component):
        recurse_remove_peft_layers(component)
        if getattr(component, "peft_config", None) is not None:
            del component.peft_config
            component._hf_peft_config_loaded = None


@contextmanager
def _slot_preparation_held(pipe: Any) -> Iterator[None]:
    """Hold back diffusers' pending slot preparation while a LoRA is loaded beside an empty slot.

    ``enable_lora_hotswap`` only arms the denoiser (diffusers' ``_prepare_lora_hotswap_kwargs``): the next
    adapter loaded, whichever it is, is padded to the slot's rank and the slot disarmed. A LoRA beside the
    slot must not take that turn: above the rank it fails to load; at or below it, the slot's own first
    LoRA would later go unpadded (and every later swap recompile)."""
    held = {}
    for name, component in pipe.components.items():
        if getattr(component, "_prepare_lora_hotswap_kwargs", None) is not None:
            held[name] = component._prepare_lora_hotswap_kwargs
            component._prepare_lora_hotswap_kwargs = None
    try:
        yield
    finally:
        for name, kwargs in held.items():
            pipe.components[name]._prepare_lora_hotswap_kwargs = kwargs


@contextmanager
def _swapped_in(pipe: Any, slot: LoraSlot, lora_file: Path) -> Iterator[None]:
    import torch

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
        yield
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
