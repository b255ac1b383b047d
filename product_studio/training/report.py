"""What a reviewer looks at after training: a loss-curve PNG, validation renders and ``training.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from product_studio.records import TrainResult
    from product_studio.training.adapters import Adapters
    from product_studio.training.config import TrainConfig

_W, _H, _PAD = 640, 320, 40


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_curve_png(losses: list[float], path: Path, title: str = "training loss") -> Path:
    """Raw loss (light) and its moving average (dark) against steps, drawn with Pillow alone."""
    img = Image.new("RGB", (_W, _H), "white")
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = _PAD, _PAD // 2, _W - _PAD // 2, _H - _PAD
    draw.rectangle([x0, y0, x1, y1], outline=(160, 160, 160))
    if losses:
        smooth = moving_average(losses, max(1, len(losses) // 20))
        lo, hi = min(losses), max(losses)
        span = (hi - lo) or 1.0

        def pt(i: int, v: float) -> tuple[float, float]:
            x = x0 + (x1 - x0) * (i / max(1, len(losses) - 1))
            return x, y1 - (y1 - y0) * ((v - lo) / span)

        draw.line([pt(i, v) for i, v in enumerate(losses)], fill=(170, 200, 235), width=1)
        draw.line([pt(i, v) for i, v in enumerate(smooth)], fill=(20, 70, 160), width=2)
        draw.text((x0, y1 + 6), "step 1", fill="black")
        draw.text((x1 - 70, y1 + 6), f"step {len(losses)}", fill="black")
        draw.text((4, y0), f"{hi:.3g}", fill="black")
        draw.text((4, y1 - 10), f"{lo:.3g}", fill="black")
        title += f"  (last {len(smooth) and smooth[-1]:.4f})"
    draw.text((x0 + 6, y0 + 4), title, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def validate(
    pipe, lora: Adapters, prompts: list[str], config: TrainConfig, resolution: int, out_dir: Path, tag: str
) -> list[Path]:
    """Render ``prompts`` with the LoRA as it is now (its adapters in eval mode meanwhile)."""
    lora.train(False)
    try:
        return render_validation(
            pipe,
            prompts,
            resolution=resolution,
            steps=config.validation_steps,
            seed=config.seed,
            out_dir=out_dir,
            tag=tag,
        )
    finally:
        lora.train()


def render_validation(
    pipe, prompts: list[str], *, resolution: int, steps: int, seed: int, out_dir: Path, tag: str
) -> list[Path]:
    """One image per prompt with the LoRA as it is now (fixed seeds, so steps compare like for like)."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for n, prompt in enumerate(prompts):
        with torch.no_grad():
            image: Image.Image = pipe(
                prompt=prompt,  # by name: FLUX.2 [klein]'s first argument is an image
                height=resolution,
                width=resolution,
                num_inference_steps=steps,
                generator=torch.Generator("cpu").manual_seed(seed + n),
            ).images[0]
        path = out_dir / f"{tag}-{n}.png"
        image.save(path)
        paths.append(path)
    return paths


def write_summary(path: Path, result: TrainResult, config: TrainConfig, meta: dict[str, Any]) -> None:
    """``training.json``: settings, metadata, timings and every step's loss."""
    summary = {
        "settings": config.model_dump(mode="json"),
        "metadata": {k: str(v) for k, v in meta.items()},
        "resumed_from": result.resumed_from,
        "timings_s": result.timings,
        "final_loss": round(result.final_loss, 6),
        "losses": [round(v, 6) for v in result.losses],
    }
    path.write_text(json.dumps(summary, indent=1))
