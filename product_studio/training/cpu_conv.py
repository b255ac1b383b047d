"""CPU convolutions: oneDNN (mkldnn) or PyTorch's native kernels, whichever runs this model faster.

oneDNN wins on wide layers; on small ones (the tiny test models, small latents) native kernels are faster
(16% on the tiny SD at 8x8 latents, bench/RESULTS.md). ``auto`` times both once per model and shape in this
process, like ``cudnn.benchmark``, and remembers the winner.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

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


def use_mkldnn(setting: str, unet, run_step: Callable[[], None]) -> bool:
    """The backend to train with: ``setting`` unless it is ``auto``, then the faster of the two."""
    if setting != "auto":
        return setting == "mkldnn"
    key = (id(unet), unet.config.sample_size, tuple(unet.config.block_out_channels))
    if key not in _CHOICE:
        times: dict[bool, list[float]] = {True: [], False: []}
        for enabled in (True, False):  # warm-up both
            with mkldnn_enabled(enabled):
                run_step()
        for _ in range(3):  # interleaved, so a busy moment on the machine hits both alike
            for enabled in (True, False):
                with mkldnn_enabled(enabled):
                    t0 = time.perf_counter()
                    run_step()
                    times[enabled].append(time.perf_counter() - t0)
        _CHOICE[key] = sorted(times[True])[1] <= sorted(times[False])[1]  # medians
    return _CHOICE[key]
