"""GPU benchmark in one process: training, rendering and one SKU end to end, on full-size architectures.

Random weights at SD 1.5's and SDXL's real shapes cost exactly what trained ones do (they make no images worth
looking at). One table, one row per measurement:

- LoRA training, SD 1.5 at 512 px and SDXL at 1024 px, in fp16 + gradient checkpointing and in bf16:
  ms/step, peak GPU memory, MFU (FLOPs of one training step counted by ``torch.utils.flop_counter``, over the
  GPU's dense bf16 peak). Aims: SD 1.5 bf16 >= 40% MFU, <= 8 GB with fp16 + checkpointing.
- Scene rendering throughput, both architectures: images/s at batch 4, 30 steps (text-to-image and composite
  inpainting, as cards are made).
- One SKU end to end on SD 1.5: 1000 training steps, then 8 composite scenes x 4 candidates. Aim: <= 60 s.
- FLUX.2 [klein] 4B at 1024 px (``klein_4b.py``: its real shapes, random weights): LoRA training in bf16 with
  and without gradient checkpointing (ms/step, peak memory, MFU) and rendering (images/s at batch 4, 30 steps,
  and the seconds of one composite card at 1 MP, the seller's cutout as the inpainter's reference).
- A warm worker (issue 23): three SKUs on one loaded SD 1.5 pipeline, per SKU after the first: train +
  render seconds, plain (load and unload each LoRA) and with ``render.compile`` (the denoiser compiled once,
  each LoRA hot-swapped into its slot).

Rows that would run past ``--budget-s`` are skipped (and say so), so the script finishes in one call.

    python bench/gpu.py --json gpu.json                         # on one H100/H200: about 5-8 minutes
    python bench/gpu.py --tiny --device cpu --steps 2           # smoke run on a CPU (a test runs this)
    python bench/gpu.py --rows klein --budget-s 400             # only the rows whose name says "klein"
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Dense bf16 tensor-core peaks (TFLOP/s), by substring of torch.cuda.get_device_name().
PEAKS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0}
ROOT = Path(__file__).resolve().parents[1]


def _tokenizer():
    from transformers import CLIPTokenizer

    from product_studio.devkit.tiny_models import write_clip_tokenizer_files

    folder = Path(tempfile.mkdtemp()) / "tokenizer"
    write_clip_tokenizer_files(folder)
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    tokenizer.model_max_length = 77
    return tokenizer


def _clip(tokenizer, hidden: int, layers: int, heads: int, inner: int, act: str, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=inner,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=hidden,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _vae(scaling: float):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
        scaling_factor=scaling,
    )


def build(arch: str, tiny: bool, device: str, dtype):
    """A pipeline of the architecture with seeded random weights, made on ``device`` in ``dtype``."""
    import torch
    from diffusers import (
        EulerDiscreteScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    from product_studio.devkit.tiny_models import build_tiny_model
    from product_studio.models import load_pipeline

    if tiny:
        folder = build_tiny_model(Path(tempfile.mkdtemp()) / arch, family="sdxl" if arch == "sdxl" else "sd")
        load_pipeline.cache_clear()
        return load_pipeline(str(folder)).to(device, dtype)
    torch.manual_seed(0)
    betas = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}
    tokenizer = _tokenizer()
    # Schedulers hold small tables on the CPU; the networks are initialised on the GPU (minutes faster
    # than on the CPU for SDXL).
    sd_scheduler = PNDMScheduler(skip_prk_steps=True, **betas)
    xl_scheduler = EulerDiscreteScheduler(timestep_spacing="leading", **betas)
    with torch.device(device):
        if arch == "sd15":
            pipe = StableDiffusionPipeline(
                vae=_vae(0.18215),
                text_encoder=_clip(tokenizer, 768, 12, 12, 3072, "quick_gelu"),
                tokenizer=tokenizer,
                unet=UNet2DConditionModel(sample_size=64, cross_attention_dim=768),  # the defaults are SD 1.x
                scheduler=sd_scheduler,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        else:
            unet = UNet2DConditionModel(
                sample_size=128,
                block_out_channels=(320, 640, 1280),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                transformer_layers_per_block=(1, 2, 10),
                attention_head_dim=(5, 10, 20),
                cross_attention_dim=2048,
                use_linear_projection=True,
                addition_embed_type="text_time",
                addition_time_embed_dim=256,
                projection_class_embeddings_input_dim=2816,
            )
            pipe = StableDiffusionXLPipeline(
                vae=_vae(0.13025),
                text_encoder=_clip(tokenizer, 768, 12, 12, 3072, "quick_gelu"),
                text_encoder_2=_clip(tokenizer, 1280, 32, 20, 5120, "gelu", projection=True),
                tokenizer=tokenizer,
                tokenizer_2=tokenizer,
                unet=unet,
                scheduler=xl_scheduler,
            )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


class Bench:
    """Runs rows within a time budget and keeps the table."""

    def __init__(self, budget_s: float, device: str, only: list[str] | None = None) -> None:
        self.start, self.budget_s, self.device = time.perf_counter(), budget_s, device
        self.only = only
        self.rows: list[dict[str, Any]] = []

    def row(self, name: str, estimate_s: float, fn: Callable[[], dict[str, Any]]) -> None:
        if self.only and not any(word in name for word in self.only):
            return
        left = self.budget_s - (time.perf_counter() - self.start)
        if estimate_s > left:
            self.rows.append({"row": name, "skipped": f"needs ~{estimate_s:.0f} s, {left:.0f} s left"})
        else:
            import torch

            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            result = fn()
            peak = torch.cuda.max_memory_allocated() / 2**30 if self.device.startswith("cuda") else None
            self.rows.append({"row": name, **result, "peak_gib": peak and round(peak, 2),
                              "wall_s": round(time.perf_counter() - t0, 1)})  # fmt: skip
        print(json.dumps(self.rows[-1]), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="training steps per training row")
    ap.add_argument("--sku-steps", type=int, default=1000, help="training steps of the end-to-end SKU")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="the tiny models instead of the full-size ones")
    ap.add_argument("--budget-s", type=float, default=450, help="skip rows that would run past this")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak; default: looked up by GPU name")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the warm rows")
    ap.add_argument("--rows", nargs="+", help="only the rows whose name holds one of these words")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch
    from flops import step_flops
    from klein_4b import build_klein
    from PIL import Image, ImageDraw

    from product_studio.identifiers import ProductPrompts
    from product_studio.models import native_resolution
    from product_studio.rendering import renderer
    from product_studio.rendering.scenes import load_library
    from product_studio.training import TrainConfig, from_cutout, train_lora

    gpu = args.device.startswith("cuda")
    name = torch.cuda.get_device_name() if gpu else platform.processor() or "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAKS.items() if k in name), None)
    bench = Bench(args.budget_s, args.device, args.rows)
    prompts = ProductPrompts("olis", "teapot")
    half = torch.float16 if gpu else torch.float32  # CPUs have no fast fp16 kernels: the smoke run uses fp32
    bf16 = torch.bfloat16 if gpu else torch.float32
    scale = 1 if args.tiny else 10  # rough seconds per row, for the budget

    def cutout(side: int) -> Image.Image:
        im = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        ImageDraw.Draw(im).ellipse(
            (side // 5, side // 6, 4 * side // 5, 5 * side // 6), fill=(22, 128, 122, 255)
        )
        return im

    def train(pipe, steps: int, **extra) -> tuple[float, Any]:
        side = native_resolution(pipe)
        instance = [from_cutout(cutout(side))] * 4
        classes = [Image.new("RGB", (side, side), (40, 40 + 10 * i, 200)) for i in range(8)]
        config = TrainConfig(steps=steps, rank=args.rank, prior_images=8, validation_prompts=[],
                             checkpoint_every=0, **extra)  # fmt: skip
        result = train_lora(
            pipe, instance, classes, prompts=prompts, config=config, out_dir=Path(tempfile.mkdtemp())
        )
        return result.timings["step_ms"], result

    def train_row(pipe, extra: dict[str, Any]) -> dict[str, Any]:
        """ms a training step, its FLOPs and MFU."""
        flops = step_flops(pipe, native_resolution(pipe), args.rank)
        step_ms, _ = train(pipe, args.steps, **extra)
        mfu = flops / (step_ms / 1000) / (peak * 1e12) if peak else None
        return {"ms_per_step": step_ms, "gflop_per_step": round(flops / 1e9, 1), "mfu": mfu and round(mfu, 3)}

    def render_rates(pipe, candidates: int) -> tuple[float, float, int]:
        """Text-to-image images/s at batch 4 and 30 steps (after a warm-up), the seconds of one composite
        call making ``candidates`` cards of the native size, and that size."""
        side = native_resolution(pipe)
        gens = [torch.Generator("cpu").manual_seed(i) for i in range(4)]
        prompt = ["a photo of a teapot"] * 4
        pipe(prompt=prompt, num_inference_steps=2, height=side, width=side, generator=gens)
        t0 = time.perf_counter()
        pipe(prompt=prompt, num_inference_steps=30, height=side, width=side, generator=gens)
        text = 4 / (time.perf_counter() - t0)
        template = load_library(ROOT / "templates")["oak-table"].model_copy(update={"candidates": candidates})
        t0 = time.perf_counter()
        renderer.composite_scene(pipe, template, prompts, cutout(side), (side, side), steps=30)
        return round(text, 2), time.perf_counter() - t0, side

    for arch in ("sd15", "sdxl"):
        variants = [("fp16 + checkpointing", half, {"gradient_checkpointing": True}), ("bf16", bf16, {})]
        for label, dtype, extra in variants:

            def training_row(arch=arch, dtype=dtype, extra=extra) -> dict[str, Any]:
                return train_row(build(arch, args.tiny, args.device, dtype), extra)

            estimate = scale * (3 if arch == "sd15" else 12) * (1 + args.steps / 40)
            bench.row(f"train {arch} {label}", estimate, training_row)

        def render_row(arch=arch) -> dict[str, Any]:
            text, composite_s, side = render_rates(build(arch, args.tiny, args.device, half), candidates=4)
            return {"images_per_s": text, "composite_images_per_s": round(4 / composite_s, 2), "size": side}

        bench.row(f"render {arch} batch 4 x 30 steps", scale * (4 if arch == "sd15" else 15), render_row)

    for label, extra in [("bf16 + checkpointing", {"gradient_checkpointing": True}), ("bf16", {})]:

        def klein_training_row(extra=extra) -> dict[str, Any]:
            return train_row(build_klein(args.tiny, args.device, bf16), extra)

        bench.row(f"train klein-4b {label}", scale * 6 * (1 + args.steps / 40), klein_training_row)

    def klein_render_row() -> dict[str, Any]:
        text, composite_s, side = render_rates(build_klein(args.tiny, args.device, bf16), candidates=1)
        return {"images_per_s": text, "composite_s": round(composite_s, 2), "size": side}  # 1024 px: 1 MP

    bench.row("render klein-4b batch 4 x 30 steps; one composite at 1 MP", scale * 12, klein_render_row)

    def sku_row() -> dict[str, Any]:
        pipe = build("sd15", args.tiny, args.device, half)
        t0 = time.perf_counter()
        _, trained = train(pipe, args.sku_steps, gradient_checkpointing=False)
        train_s = time.perf_counter() - t0
        library = list(load_library(ROOT / "templates").values())[:8]
        side = native_resolution(pipe)
        t0 = time.perf_counter()
        with renderer.product_lora(pipe, trained.lora_file):
            for template in library:
                template = template.model_copy(update={"candidates": 4, "mode": "composite"})
                renderer.render_scene_cards(pipe, template, prompts, cutout(side), (1600, 1600), steps=30)
        render_s = time.perf_counter() - t0
        return {
            "train_s": round(train_s, 1),
            "render_s": round(render_s, 1),
            "sku_s": round(train_s + render_s, 1),
        }

    bench.row(
        f"one SKU: {args.sku_steps} steps + 8 scenes x 4 candidates",
        scale * 8 * (1 + args.sku_steps / 200),
        sku_row,
    )

    def warm_row(compiled: bool) -> dict[str, Any]:
        """Three SKUs on one worker (one loaded pipeline): train, then 4 scenes x 2 candidates each; the
        seconds of the SKUs after the first (with compile + hot-swap, the first one compiles)."""
        from product_studio.rendering.lora_slot import keep_lora_slot

        pipe = build("sd15", args.tiny, args.device, half)
        if compiled:
            keep_lora_slot(pipe, args.rank, backend=args.compile_backend)
        library = list(load_library(ROOT / "templates").values())[:4]
        side = native_resolution(pipe)
        seconds = []
        for sku in range(3):
            t0 = time.perf_counter()
            _, trained = train(pipe, args.steps, seed=sku)
            t1 = time.perf_counter()
            with renderer.product_lora(pipe, trained.lora_file):
                for template in library:
                    template = template.model_copy(update={"candidates": 2})
                    renderer.render_scene_cards(pipe, template, prompts, cutout(side), (1600, 1600), steps=30)
            seconds.append((t1 - t0, time.perf_counter() - t1))
        later = seconds[1:]
        return {
            "first_sku_s": round(sum(seconds[0]), 1),
            "train_s": round(sum(t for t, _ in later) / len(later), 1),
            "render_s": round(sum(r for _, r in later) / len(later), 1),
            "sku_s": round(sum(t + r for t, r in later) / len(later), 1),
        }

    for compiled in (False, True):
        label = "compile + hot-swap" if compiled else "plain"
        bench.row(
            f"warm worker, {label}: SKUs 2-3 of 3 ({args.steps} steps + 4 scenes x 2)",
            scale * 6 * (1 + args.steps / 100) * (2 if compiled else 1),
            lambda compiled=compiled: warm_row(compiled),
        )

    print(f"\ndevice: {name}; torch {torch.__version__}; peak bf16 {peak} TFLOP/s; rank {args.rank}; "
          f"{'tiny models' if args.tiny else 'SD 1.5 at 512 px, SDXL and klein 4B at 1024 px'}")  # fmt: skip
    print("| row | ms/step | MFU | images/s | composite images/s | peak GiB | s | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in bench.rows:
        note = r.get("skipped") or (
            f"train {r['train_s']} s + render {r['render_s']} s" if "sku_s" in r else ""
        )
        if "first_sku_s" in r:
            note += f"; first SKU {r['first_sku_s']} s"
        if "composite_s" in r:
            note += f"one {r['size']} px composite card: {r['composite_s']} s"
        cells = [r.get("ms_per_step"), r.get("mfu"), r.get("images_per_s"), r.get("composite_images_per_s")]
        cells += [r.get("peak_gib"), r.get("sku_s", r.get("wall_s")), note]
        print(f"| {r['row']} | " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(bench.rows, indent=2))


if __name__ == "__main__":
    main()
