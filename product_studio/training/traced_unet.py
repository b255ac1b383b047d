"""Opt-in: the training UNet run as a TorchScript trace, for small models on a CPU.

A UNet call in eager mode walks diffusers' and torch's Python for every block, attention processor and LoRA
layer (the attention processor even inspects its own signature on every call). On the tiny SD at 64 px a
trace, which records the operations once and replays them without that Python, makes a training step ~15%
faster (bench/RESULTS.md) with the same numbers: the same losses and weights to the last bit
(``tests/test_training.py``). The trace shares the UNet's parameters, so it computes with the optimizer's
in-place updates.

Limits, all checked: float32 SD 1.x/2.x UNets only (SDXL's extra conditioning and autocast run eager), no
gradient checkpointing, and a fixed batch (what a training run has). Tracing costs ~0.4 s on the tiny SD:
worth it for hundreds of steps, not for a 40-step test run. TorchScript is deprecated in recent torch releases
in favour of ``torch.compile``, which on a CPU costs more to compile than a short run saves; when
``torch.jit`` is gone the run falls back to eager and says so in ``training.json`` (``unet_traced: 0``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any


def trace_unet(unet: Any, noisy: Any, timesteps: Any, hidden: Any) -> Callable[..., Any] | None:
    """``(noisy, timesteps, hidden) -> prediction`` replaying a trace of ``unet``, or None where unsupported.

    The example inputs fix the batch and latent shapes; ``unet`` must be in the mode it will train in.
    """
    import torch

    if not hasattr(torch, "jit") or not hasattr(torch.jit, "trace"):
        return None
    try:
        with warnings.catch_warnings():
            # TorchScript's own deprecation notice and tracer warnings about Python values (the timestep
            # count and shapes it records as constants, which are constant in a training run).
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(unet, (noisy, timesteps, hidden), check_trace=False, strict=False)
    except Exception:  # an architecture the tracer cannot record: train eagerly instead
        return None

    def forward(noisy: Any, timesteps: Any, hidden: Any) -> Any:
        # Replayed as recorded: the graph executor's optimisations (its own autodiff and fusions) change
        # the float rounding and, on these small graphs, cost more than they save.
        with torch.jit.optimized_execution(False):
            return traced(noisy, timesteps, hidden)["sample"]

    return forward
