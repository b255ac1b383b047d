"""Each optimizer group's LoRA weights as views into one flat parameter (part of ``lean_lora``).

A LoRA on the SD UNet is 64 small tensors (more with the text encoders); the optimizer and gradient clipping
walk them one by one in Python each step, ~0.4 ms on a CPU where the tiny SD's whole step is ~8 ms. Here each
group's tensors become views into one flat parameter and their gradients views into its gradient, so the
optimizer and the clipping see one tensor, and autograd accumulates into the views in place (nothing is
copied). AdamW is elementwise, so it computes the same numbers; the clipping norm sums in another order,
which moves its last bits.
"""

from __future__ import annotations

from typing import Any


def flat_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The optimizer ``groups`` with each group's parameters made views into one flat parameter (returned in
    their place); a group of mixed dtypes or devices is left as it is. Gradients must then be zeroed, not set
    to None (``optimizer.zero_grad(set_to_none=False)``): the views would lose their buffer."""
    import torch

    out = []
    for group in groups:
        params = group["params"]
        if not params or len({(p.dtype, p.device) for p in params}) != 1:
            out.append(group)
            continue
        flat = torch.nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
        flat.grad = torch.zeros_like(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.data = flat.data[offset : offset + n].view_as(p)
            p.grad = flat.grad[offset : offset + n].view_as(p)
            offset += n
        out.append({**group, "params": [flat]})
    return out


def views_intact(params: list[Any], optimized: list[Any]) -> bool:
    """Whether each of ``params`` that is a view into a flat parameter of ``optimized`` still has its gradient
    in that parameter's gradient (a ``zero_grad(set_to_none=True)`` or a ``.grad`` assignment elsewhere cuts a
    view loose, and its parameter would silently stop training)."""

    def buffer(t: Any) -> int:
        return t.untyped_storage().data_ptr()

    flat = {id(p) for p in optimized}
    grad_buffer = {buffer(p): buffer(p.grad) for p in optimized if p.grad is not None}
    views = [p for p in params if id(p) not in flat and buffer(p) in grad_buffer]
    return all(p.grad is not None and buffer(p.grad) == grad_buffer[buffer(p)] for p in views)
