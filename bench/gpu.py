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
- klein 4B zero-shot candidates (issue 37): seconds per generate candidate at 1 MP from 1, 2 and 4 cutouts as
  reference images, no LoRA.
- Relight (issue 36): the seconds of one composite card at 1 MP with ``light: keep`` and with ``light: match``
  (the second, low-strength pass over the product and the detail transfer), SDXL and klein 4B shapes.
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
import importlib
import json
import platform
import tempfile
import time
from collections.abc import Callable
from functools import partial
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


def _sd15(tokenizer, scheduler):
    """SD 1.5 at its real shapes (the UNet's defaults are SD 1.x)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    return StableDiffusionPipeline(
        vae=_vae(0.18215),
        text_encoder=_clip(tokenizer, 768, 12, 12, 3072, "quick_gelu"),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(sample_size=64, cross_attention_dim=768),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _sdxl(tokenizer, scheduler):
    """SDXL at its real shapes."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    # Made first: the seeded weights are drawn in this order (UNet, VAE, text encoders).
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
    return StableDiffusionXLPipeline(
        vae=_vae(0.13025),
        text_encoder=_clip(tokenizer, 768, 12, 12, 3072, "quick_gelu"),
        text_encoder_2=_clip(tokenizer, 1280, 32, 20, 5120, "gelu", projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )


def build(arch: str, tiny: bool, device: str, dtype):
    """A pipeline of the architecture with seeded random weights, made on ``device`` in ``dtype``."""
    import torch
    from diffusers import EulerDiscreteScheduler, PNDMScheduler

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
        pipe = _sd15(tokenizer, sd_scheduler) if arch == "sd15" else _sdxl(tokenizer, xl_scheduler)
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


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="training steps per training row")
    ap.add_argument("--sku-steps", type=int, default=1000, help="training steps of the end-to-end SKU")
    ap.add_argument("--render-steps", type=int, default=30, help="denoising steps of every render row")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="the tiny models instead of the full-size ones")
    ap.add_argument("--budget-s", type=float, default=450, help="skip rows that would run past this")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak; default: looked up by GPU name")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the warm rows")
    ap.add_argument("--rows", nargs="+", help="only the rows whose name holds one of these words")
    ap.add_argument("--json", type=Path)
    return ap.parse_args()


def import_libraries() -> None:
    """Import what the rows use before the clock starts, so no row's time holds an import (not at the top of
    the file, so that ``--help`` stays instant)."""
    for module in (
        "torch",
        "flops",
        "klein_4b",
        "PIL.ImageDraw",
        "product_studio.identifiers",
        "product_studio.models",
        "product_studio.rendering.renderer",
        "product_studio.rendering.scenes",
        "product_studio.training",
    ):
        importlib.import_module(module)


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"


def cutout(side: int):
    """The seller's cutout: a teal ellipse on transparency, ``side`` px square."""
    from PIL import Image, ImageDraw

    im = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    ImageDraw.Draw(im).ellipse((side // 5, side // 6, 4 * side // 5, 5 * side // 6), fill=(22, 128, 122, 255))
    return im


class Measures:
    """The rows' work: each ``*_row`` method builds its models afresh and returns the row's cells."""

    def __init__(self, args: argparse.Namespace, peak: float | None) -> None:
        import torch

        from product_studio.identifiers import ProductPrompts

        self.args, self.peak = args, peak
        self.prompts = ProductPrompts("olis", "teapot")
        gpu = args.device.startswith("cuda")
        # CPUs have no fast fp16 kernels: the smoke run uses fp32.
        self.half = torch.float16 if gpu else torch.float32
        self.bf16 = torch.bfloat16 if gpu else torch.float32

    def pipeline(self, arch: str, dtype):
        return build(arch, self.args.tiny, self.args.device, dtype)

    def klein(self):
        from klein_4b import build_klein

        return build_klein(self.args.tiny, self.args.device, self.bf16)

    def train(self, pipe, steps: int, **extra) -> tuple[float, Any]:
        """ms a step and the result of training a LoRA for ``steps`` on 4 photos and 8 class images."""
        from PIL import Image

        from product_studio.models import native_resolution
        from product_studio.training import TrainConfig, from_cutout, train_lora

        side = native_resolution(pipe)
        instance = [from_cutout(cutout(side))] * 4
        classes = [Image.new("RGB", (side, side), (40, 40 + 10 * i, 200)) for i in range(8)]
        config = TrainConfig(steps=steps, rank=self.args.rank, prior_images=8, validation_prompts=[],
                             checkpoint_every=0, **extra)  # fmt: skip
        result = train_lora(
            pipe, instance, classes, prompts=self.prompts, config=config, out_dir=Path(tempfile.mkdtemp())
        )
        return result.timings["step_ms"], result

    def training(self, pipe, extra: dict[str, Any]) -> dict[str, Any]:
        """ms a training step, its FLOPs and MFU."""
        from flops import step_flops

        from product_studio.models import native_resolution

        flops = step_flops(pipe, native_resolution(pipe), self.args.rank)
        step_ms, _ = self.train(pipe, self.args.steps, **extra)
        mfu = flops / (step_ms / 1000) / (self.peak * 1e12) if self.peak else None
        return {"ms_per_step": step_ms, "gflop_per_step": round(flops / 1e9, 1), "mfu": mfu and round(mfu, 3)}

    def render_rates(self, pipe, candidates: int) -> tuple[float, float, int]:
        """Text-to-image images/s at batch 4 and ``--render-steps`` (after a warm-up), the seconds of one
        composite call making ``candidates`` cards of the native size, and that size."""
        import torch

        from product_studio.models import native_resolution
        from product_studio.rendering import renderer
        from product_studio.rendering.scenes import load_library

        side = native_resolution(pipe)
        gens = [torch.Generator("cpu").manual_seed(i) for i in range(4)]
        prompt = ["a photo of a teapot"] * 4
        pipe(prompt=prompt, num_inference_steps=2, height=side, width=side, generator=gens)
        t0 = time.perf_counter()
        pipe(
            prompt=prompt, num_inference_steps=self.args.render_steps, height=side, width=side, generator=gens
        )
        text = 4 / (time.perf_counter() - t0)
        template = load_library(ROOT / "templates")["oak-table"].model_copy(update={"candidates": candidates})
        t0 = time.perf_counter()
        renderer.composite_scene(
            pipe, template, self.prompts, cutout(side), (side, side), steps=self.args.render_steps
        )
        return round(text, 2), time.perf_counter() - t0, side

    def train_row(self, arch: str, dtype, extra: dict[str, Any]) -> dict[str, Any]:
        return self.training(self.pipeline(arch, dtype), extra)

    def render_row(self, arch: str) -> dict[str, Any]:
        text, composite_s, side = self.render_rates(self.pipeline(arch, self.half), candidates=4)
        return {"images_per_s": text, "composite_images_per_s": round(4 / composite_s, 2), "size": side}

    def klein_train_row(self, extra: dict[str, Any]) -> dict[str, Any]:
        return self.training(self.klein(), extra)

    def klein_render_row(self) -> dict[str, Any]:
        text, composite_s, side = self.render_rates(self.klein(), candidates=1)
        return {"images_per_s": text, "composite_s": round(composite_s, 2), "size": side}  # 1024 px: 1 MP

    def zero_shot_row(self) -> dict[str, Any]:
        """klein 4B zero-shot candidates (issue 37): seconds per generate candidate at 1 MP from 1, 2 and 4
        cutouts as reference images, no LoRA (after one warm-up)."""
        from product_studio.models import native_resolution
        from product_studio.rendering import renderer
        from product_studio.rendering.scenes import load_library

        pipe = self.klein()
        side = native_resolution(pipe)
        template = load_library(ROOT / "templates")["in-hand"].model_copy(update={"candidates": 1})
        references = [renderer.reference_image(cutout(side))] * 4
        seconds = {}
        for count in (1, 2, 4) if self.args.tiny else (1, 1, 2, 4):  # on a GPU the first warms up
            t0 = time.perf_counter()
            renderer.generate_scene(
                pipe, template, self.prompts, (side, side), steps=self.args.render_steps,
                references=references[:count], lora=False,
            )  # fmt: skip
            seconds[count] = round(time.perf_counter() - t0, 2)
        return {"zero_shot_s": seconds, "size": side}

    def relight_row(self, pipe) -> dict[str, Any]:
        """Seconds of one composite card at the model's native size (1 MP for SDXL and klein) with the
        photo's light and relit for the scene (after one warm-up of each)."""
        from product_studio.models import native_resolution
        from product_studio.rendering import renderer
        from product_studio.rendering.scenes import load_library

        side = native_resolution(pipe)
        template = load_library(ROOT / "templates")["kitchen-counter"]
        seconds = {}
        lights = ("keep", "match") if self.args.tiny else ("keep", "match", "keep", "match")  # GPU: warm up
        for light in lights:
            made = template.model_copy(update={"light": light})
            t0 = time.perf_counter()
            renderer.composite_scene(
                pipe, made, self.prompts, cutout(side), (side, side), steps=self.args.render_steps
            )
            seconds[light] = time.perf_counter() - t0
        return {
            "keep_s": round(seconds["keep"], 2),
            "match_s": round(seconds["match"], 2),
            "relight_s": round(seconds["match"] - seconds["keep"], 2),
            "size": side,
        }

    def sku_row(self) -> dict[str, Any]:
        """One SKU on SD 1.5: train ``--sku-steps``, then 8 composite scenes x 4 candidates."""
        from product_studio.models import native_resolution
        from product_studio.rendering import renderer
        from product_studio.rendering.scenes import load_library

        pipe = self.pipeline("sd15", self.half)
        t0 = time.perf_counter()
        _, trained = self.train(pipe, self.args.sku_steps, gradient_checkpointing=False)
        train_s = time.perf_counter() - t0
        library = list(load_library(ROOT / "templates").values())[:8]
        side = native_resolution(pipe)
        t0 = time.perf_counter()
        with renderer.product_lora(pipe, trained.lora_file):
            for template in library:
                template = template.model_copy(update={"candidates": 4, "mode": "composite"})
                renderer.render_scene_cards(
                    pipe, template, self.prompts, cutout(side), (1600, 1600), steps=self.args.render_steps
                )
        render_s = time.perf_counter() - t0
        return {
            "train_s": round(train_s, 1),
            "render_s": round(render_s, 1),
            "sku_s": round(train_s + render_s, 1),
        }

    def warm_row(self, compiled: bool) -> dict[str, Any]:
        """Three SKUs on one worker (one loaded pipeline): train, then 4 scenes x 2 candidates each; the
        seconds of the SKUs after the first (with compile + hot-swap, the first one compiles)."""
        from product_studio.models import native_resolution
        from product_studio.rendering import renderer
        from product_studio.rendering.lora_slot import keep_lora_slot
        from product_studio.rendering.scenes import load_library

        pipe = self.pipeline("sd15", self.half)
        if compiled:
            keep_lora_slot(pipe, self.args.rank, backend=self.args.compile_backend)
        library = list(load_library(ROOT / "templates").values())[:4]
        side = native_resolution(pipe)
        seconds = []
        for sku in range(3):
            t0 = time.perf_counter()
            _, trained = self.train(pipe, self.args.steps, seed=sku)
            t1 = time.perf_counter()
            with renderer.product_lora(pipe, trained.lora_file):
                for template in library:
                    template = template.model_copy(update={"candidates": 2})
                    renderer.render_scene_cards(
                        pipe, template, self.prompts, cutout(side), (1600, 1600), steps=self.args.render_steps
                    )
            seconds.append((t1 - t0, time.perf_counter() - t1))
        later = seconds[1:]
        return {
            "first_sku_s": round(sum(seconds[0]), 1),
            "train_s": round(sum(t for t, _ in later) / len(later), 1),
            "render_s": round(sum(r for _, r in later) / len(later), 1),
            "sku_s": round(sum(t + r for t, r in later) / len(later), 1),
        }


def run_rows(bench: Bench, measures: Measures, steps: int, sku_steps: int, tiny: bool) -> None:
    """Every row, in the table's order, with its rough cost for the budget."""
    scale = 1 if tiny else 10  # rough seconds per row, for the budget
    render_steps = measures.args.render_steps
    for arch in ("sd15", "sdxl"):
        variants = [
            ("fp16 + checkpointing", measures.half, {"gradient_checkpointing": True}),
            ("bf16", measures.bf16, {}),
        ]
        for label, dtype, extra in variants:
            estimate = scale * (3 if arch == "sd15" else 12) * (1 + steps / 40)
            bench.row(f"train {arch} {label}", estimate, partial(measures.train_row, arch, dtype, extra))
        render_estimate = scale * (4 if arch == "sd15" else 15)
        bench.row(
            f"render {arch} batch 4 x {render_steps} steps",
            render_estimate,
            partial(measures.render_row, arch),
        )
    for label, extra in [("bf16 + checkpointing", {"gradient_checkpointing": True}), ("bf16", {})]:
        estimate = scale * 6 * (1 + steps / 40)
        bench.row(f"train klein-4b {label}", estimate, partial(measures.klein_train_row, extra))
    bench.row(
        f"render klein-4b batch 4 x {render_steps} steps; one composite at 1 MP",
        scale * 12,
        measures.klein_render_row,
    )
    bench.row(
        "relight: one composite card at 1 MP, keep vs match, SDXL",
        scale * 10,
        lambda: measures.relight_row(measures.pipeline("sdxl", measures.half)),
    )
    bench.row(
        "relight: one composite card at 1 MP, keep vs match, klein-4b",
        scale * 12,
        lambda: measures.relight_row(measures.klein()),
    )
    bench.row(
        "klein-4b zero-shot candidate at 1 MP, 1/2/4 references",
        scale * 12,
        measures.zero_shot_row,
    )
    bench.row(
        f"one SKU: {sku_steps} steps + 8 scenes x 4 candidates",
        scale * 8 * (1 + sku_steps / 200),
        measures.sku_row,
    )
    for compiled in (False, True):
        label = "compile + hot-swap" if compiled else "plain"
        bench.row(
            f"warm worker, {label}: SKUs 2-3 of 3 ({steps} steps + 4 scenes x 2)",
            scale * 6 * (1 + steps / 100) * (2 if compiled else 1),
            partial(measures.warm_row, compiled),
        )


def table_line(r: dict[str, Any]) -> str:
    """One row of the Markdown table."""
    note = r.get("skipped") or (f"train {r['train_s']} s + render {r['render_s']} s" if "sku_s" in r else "")
    if "first_sku_s" in r:
        note += f"; first SKU {r['first_sku_s']} s"
    if "composite_s" in r:
        note += f"one {r['size']} px composite card: {r['composite_s']} s"
    if "zero_shot_s" in r:
        note += f"{r['size']} px candidate, by references: " + ", ".join(
            f"{n}: {v} s" for n, v in r["zero_shot_s"].items()
        )
    if "relight_s" in r:
        note += f"{r['size']} px card: keep {r['keep_s']} s, match {r['match_s']} s"
        note += f" (relight +{r['relight_s']} s)"
    cells = [r.get("ms_per_step"), r.get("mfu"), r.get("images_per_s"), r.get("composite_images_per_s")]
    cells += [r.get("peak_gib"), r.get("sku_s", r.get("wall_s")), note]
    return f"| {r['row']} | " + " | ".join("" if c is None else str(c) for c in cells) + " |"


def print_table(rows: list[dict[str, Any]], name: str, peak: float | None, rank: int, tiny: bool) -> None:
    """The device line and the Markdown table of every row."""
    import torch

    print(f"\ndevice: {name}; torch {torch.__version__}; peak bf16 {peak} TFLOP/s; rank {rank}; "
          f"{'tiny models' if tiny else 'SD 1.5 at 512 px, SDXL and klein 4B at 1024 px'}")  # fmt: skip
    print("| row | ms/step | MFU | images/s | composite images/s | peak GiB | s | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(table_line(r))


def main() -> None:
    args = parse_args()
    import_libraries()
    name = device_name(args.device)
    peak = args.peak_tflops or next((v for k, v in PEAKS.items() if k in name), None)
    bench = Bench(args.budget_s, args.device, args.rows)
    measures = Measures(args, peak)
    run_rows(bench, measures, args.steps, args.sku_steps, args.tiny)
    print_table(bench.rows, name, peak, args.rank, args.tiny)
    if args.json:
        args.json.write_text(json.dumps(bench.rows, indent=2))


if __name__ == "__main__":
    main()
