"""CPU convolutions, opt-in: oneDNN (mkldnn) or PyTorch's native kernels, whichever runs a model faster.

oneDNN wins on wide layers; on small ones (the tiny test models, small latents) native kernels are faster
(16% on the tiny SD at 8x8 latents, bench/RESULTS.md). A GPU run never uses this. ``default`` leaves
torch's own choice; ``auto`` times both once per model and shape in this process, like
``cudnn.benchmark``, and remembers the winner; ``mkldnn`` and ``native`` force one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

_CHOICE: dict[tuple, bool] = {}


@contextlib.contextmanager
def mkldnn_enabled(enabled: bool) -> Iterator[None]:
    import torch

    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def _fastest_is_mkldnn(unet: Any, example: dict[str, Any], autocast: Any) -> bool:
    """Time a forward and backward pass of ``unet(**example)`` with each backend (interleaved medians)."""
    import torch

    trainable = [p for p in unet.parameters() if p.requires_grad]

    def step() -> None:
        with autocast:
            out = unet(**example).sample
        if trainable:  # returned and dropped: ``.grad`` belongs to the training run (with lean_lora, views
            # into its flat buffer) and is neither written nor reset here
            torch.autograd.grad(out.float().square().mean(), trainable, allow_unused=True)

    times: dict[bool, list[float]] = {True: [], False: []}
    for enabled in (True, False):  # warm-up both
        with mkldnn_enabled(enabled):
            step()
    for _ in range(3):  # interleaved, so a busy moment on the machine hits both alike
        for enabled in (True, False):
            with mkldnn_enabled(enabled):
                t0 = time.perf_counter()
                step()
                times[enabled].append(time.perf_counter() - t0)
    return sorted(times[True])[1] <= sorted(times[False])[1]


@contextlib.contextmanager
def convolution_backend(
    setting: str, unet: Any, example: dict[str, Any], autocast: Any = None
) -> Iterator[bool | None]:
    """For the block, the backend ``setting`` names; yields whether oneDNN is on (None: torch's default).

    ``example`` holds the keyword arguments of one UNet call shaped like a training step's.
    """
    if setting == "default":
        yield None
        return
    if setting == "auto":
        key = (id(unet), tuple(example["sample"].shape), tuple(unet.config.block_out_channels))
        if key not in _CHOICE:
            _CHOICE[key] = _fastest_is_mkldnn(unet, example, autocast or contextlib.nullcontext())
        enabled = _CHOICE[key]
    else:
        enabled = setting == "mkldnn"
    with mkldnn_enabled(enabled):
        yield enabled
