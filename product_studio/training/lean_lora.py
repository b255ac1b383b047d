"""A lean forward for peft's LoRA linear layers while training.

peft's ``lora.Linear.forward`` handles every case (several adapters, dropout, DoRA and other variants,
mixed-batch adapters, merging, dtype casts) in Python on every call. Training one adapter without dropout
needs only ``base(x) + scale * B(A(x))``. Where steps are bound by per-call overhead (small models, the
CPU), that matters: on the tiny SD peft's forward costs 6.5 ms of a 24.5 ms UNet step, this one ~4 ms
(bench/RESULTS.md). peft still creates, saves and loads the
adapter; only the forward is swapped, for the duration of a ``with`` block, and only where it is exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def _lean(layer: Any, adapter: str):
    import torch.nn.functional as F

    base = layer.base_layer
    a, b = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
    scale = layer.scaling[adapter]

    def forward(x, *args: Any, **kwargs: Any):
        result = base(x, *args, **kwargs)
        return result + (F.linear(F.linear(x.to(a.dtype), a), b) * scale).to(result.dtype)

    return forward


def _is_plain(layer: Any, adapter: str) -> bool:
    import torch
    from peft.tuners.lora.layer import Linear

    return (
        type(layer) is Linear
        and list(layer.active_adapters) == [adapter]
        and isinstance(layer.lora_dropout[adapter], torch.nn.Identity)
        and adapter not in layer.lora_variant
        and not layer.merged
        and not layer.disable_adapters
        and isinstance(layer.base_layer, torch.nn.Linear)
    )


@contextlib.contextmanager
def lean_lora_forward(modules: list[Any], adapter: str, enabled: bool = True) -> Iterator[int]:
    """Swap in the lean forward on every plain LoRA linear layer of ``modules``; yields how many."""
    swapped = []
    if enabled:
        for module in modules:
            for layer in module.modules():
                if adapter in getattr(layer, "lora_A", {}) and _is_plain(layer, adapter):
                    layer.forward = _lean(layer, adapter)
                    swapped.append(layer)
    try:
        yield len(swapped)
    finally:
        for layer in swapped:
            del layer.forward  # back to the class's own forward
