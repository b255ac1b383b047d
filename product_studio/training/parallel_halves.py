"""Opt-in, CPU: a step's instance half and class-prior half, forward and backward at once on two threads.

A DreamBooth step's batch is ``batch_size`` instance samples plus as many class samples, and its loss is the
instance loss plus lambda x the prior loss, so its gradient is the sum of the two halves' gradients. On a
small model a CPU step is bound by per-operation overhead, which intra-op threads cannot split: two cores
run one batched step hardly faster than one. Replayed as a TorchScript trace, a UNet pass (and autograd's
backward) runs without Python's lock, so the halves can run at the same time, each on half the cores.

The calling thread accumulates the instance half's gradient into ``.grad``; a worker thread computes the
class half's; it is added after, always in that order, so a run is deterministic (and resumes exactly). It
equals the batched step up to float rounding: a half-batch matrix product sums in another order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

A = TypeVar("A")
B = TypeVar("B")


class Halves:
    """``halves(first, second)`` runs ``second`` on the worker thread while ``first`` runs on this one."""

    def __init__(self, pool: ThreadPoolExecutor, threads: int) -> None:
        self._pool, self._threads = pool, threads

    def __call__(self, first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
        pending = self._pool.submit(second)
        try:
            done = first()
        except BaseException:
            wait([pending])  # never leave the worker running into whatever comes next
            raise
        return done, pending.result()

    @contextlib.contextmanager
    def all_threads(self) -> Iterator[None]:
        """Every intra-op thread for the block (a validation render between steps), then halves again."""
        import torch

        torch.set_num_threads(self._threads)
        try:
            yield
        finally:
            torch.set_num_threads(self._threads // 2)


@contextlib.contextmanager
def two_halves() -> Iterator[Halves | None]:
    """For the block, :class:`Halves` with half of torch's intra-op threads for each thread; None where there
    is only one intra-op thread to split."""
    import torch

    threads = torch.get_num_threads()
    if threads < 2:
        yield None
        return
    torch.set_num_threads(threads // 2)  # a process-wide setting: new threads take it up too
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="class-half")
    try:
        yield Halves(pool, threads)
    finally:
        pool.shutdown(wait=True)
        torch.set_num_threads(threads)


def add_gradients(params: list[Any], grads: tuple[Any, ...]) -> None:
    """``p.grad += g`` for every parameter (one fused call), creating the gradients that are missing."""
    import torch

    for p, _ in zip(params, grads, strict=True):  # one gradient per parameter
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    torch._foreach_add_([p.grad for p in params], list(grads))
