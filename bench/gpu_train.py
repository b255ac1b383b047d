"""GPU benchmark: LoRA training on the full-size SD 1.5 architecture with random weights.

Reports steps/s, peak GPU memory and model FLOP utilisation (FLOPs per step counted by
``torch.utils.flop_counter.FlopCounterMode`` over one training step, divided by the GPU's dense bf16
peak) for fp16 + gradient checkpointing (aim: within 8 GB) and bf16 without checkpointing (aim: >= 35%
MFU). Random weights make no images worth looking at but cost exactly what real ones do.

    python bench/gpu_train.py [--steps 60] [--batch-size 1] [--peak-tflops 989]
    python bench/gpu_train.py --tiny --device cpu --steps 5     # a smoke run of this script on a CPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

# Dense bf16 tensor-core peaks (TFLOP/s), by substring of torch.cuda.get_device_name().
PEAKS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0}


def sd15_pipeline(tiny: bool):
    """SD 1.5's architecture (UNet 860M, VAE, CLIP ViT-L/14 text encoder) with seeded random weights."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from product_studio.devkit.tiny_models import build_tiny_model, write_clip_tokenizer_files
    from product_studio.models import load_pipeline

    if tiny:
        return load_pipeline(str(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny")))
    torch.manual_seed(0)
    tok_dir = Path(tempfile.mkdtemp()) / "tokenizer"
    write_clip_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer(vocab=str(tok_dir / "vocab.json"), merges=str(tok_dir / "merges.txt"))
    tokenizer.model_max_length = 77
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # diffusers' defaults are SD 1.x
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=768,
        )
    )
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)  # fmt: skip


def step_flops(pipe, batch: int, resolution: int, rank: int) -> float:
    """FLOPs of one training step (forward + backward of the UNet with LoRA), counted by torch."""
    import torch
    from peft import LoraConfig
    from torch.utils.flop_counter import FlopCounterMode

    unet = pipe.unet
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_k", "to_q", "to_v", "to_out.0"]),
                     adapter_name="flops")  # fmt: skip
    try:
        side = resolution // pipe.vae_scale_factor
        x = torch.randn(2 * batch, 4, side, side, device=pipe.device, dtype=unet.dtype)
        t = torch.randint(0, 1000, (2 * batch,), device=pipe.device)
        e = torch.randn(2 * batch, 77, unet.config.cross_attention_dim, device=pipe.device, dtype=unet.dtype)
        with FlopCounterMode(display=False) as counter:
            unet(x, t, e).sample.float().mean().backward()
        return float(counter.get_total_flops())
    finally:
        unet.delete_adapters("flops")
        unet.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=1, help="instance images per step (+ as many class)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="the tiny model instead of SD 1.5 (smoke test)")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak; default: looked up by GPU name")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch
    from PIL import Image

    from product_studio.identifiers import ProductPrompts
    from product_studio.models import native_resolution
    from product_studio.training import TrainConfig, train_lora

    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAKS.items() if k in name), None)
    base = sd15_pipeline(args.tiny)
    resolution = native_resolution(base)
    instance = [Image.new("RGB", (resolution, resolution), (200, 40 + 30 * i, 40)) for i in range(5)]
    classes = [Image.new("RGB", (resolution, resolution), (40, 40 + 10 * i, 200)) for i in range(8)]
    rows = []
    variants = [
        ("fp16 + gradient checkpointing", torch.float16, {"gradient_checkpointing": True}),
        ("bf16", torch.bfloat16, {}),
        ("bf16 + gradient checkpointing", torch.bfloat16, {"gradient_checkpointing": True}),
        ("fp32", torch.float32, {}),
    ]
    for label, dtype, extra in variants:
        if args.device == "cpu" and dtype == torch.float16:
            continue
        pipe = base.to(args.device, dtype)
        flops = step_flops(pipe, args.batch_size, resolution, args.rank)
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        config = TrainConfig(steps=args.steps, rank=args.rank, batch_size=args.batch_size, prior_images=8,
                               validation_prompts=[], checkpoint_every=0, **extra)  # fmt: skip
        start = time.perf_counter()
        result = train_lora(pipe, instance, classes, prompts=ProductPrompts("olis", "teapot"), config=config,
                            out_dir=Path(tempfile.mkdtemp()))  # fmt: skip
        wall = time.perf_counter() - start
        steps_s = 1000 / result.timings["step_ms"]
        peak_gib = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None
        mfu = flops * steps_s / (peak * 1e12) if peak else None
        row = {"variant": label, "steps_per_s": round(steps_s, 3), "wall_s": round(wall, 1),
               "peak_gib": peak_gib and round(peak_gib, 2), "gflop_per_step": round(flops / 1e9, 1),
               "mfu": mfu and round(mfu, 3)}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"device: {name}; torch {torch.__version__}; resolution {resolution}; batch {args.batch_size}+"
          f"{args.batch_size}; rank {args.rank}; peak bf16 {peak} TFLOP/s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
