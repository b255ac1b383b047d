"""Benchmark: `product-studio train` against diffusers' reference DreamBooth LoRA script, same machine.

Both train the same base model on the same photos with the same steps, class images, resolution, rank,
learning rate, batch (1 instance + 1 class image) and seed, in the same Python environment (same torch).
Wall time includes start-up. Our trainer is also run with each optimisation turned off, one at a time.

    python bench/train_vs_reference.py --reference /path/to/train_dreambooth_lora.py [--steps 1000]

The reference script is not part of this repository (see bench/README.md for where to get it) and needs
torchvision, which must import beside the torch of the environment you run this in.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "dreambench-products" / "teapot"
# The opt-in speed-ups for small models on a CPU (README, Training): what this benchmark's tiny model is.
CPU_OPT_INS = ["--lean-lora", "--cpu-conv-backend", "auto"]
INSTANCE_PROMPT = "a photo of olis teapot"
CLASS_PROMPT = "a photo of a teapot"


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB (the child's own) and the output tail of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return wall, usage.ru_maxrss / 1024, out


def make_inputs(work: Path, class_images: int, photos: Path | None) -> tuple[Path, Path, Path]:
    """The tiny model, the instance photos and pre-generated class images (shared by both trainers)."""
    from PIL import Image, ImageDraw

    from product_studio.devkit.tiny_models import build_tiny_model
    from product_studio.models import load_pipeline
    from product_studio.priors import generate_class_images

    model = build_tiny_model(work / "tiny-sd")
    if photos is None:  # phone-sized JPEGs drawn in code, when the real photos are not on this machine
        photos = work / "photos"
        photos.mkdir()
        for i in range(5):
            im = Image.new("RGB", (1024, 1024), (235 - 9 * i, 228, 215))
            ImageDraw.Draw(im).ellipse((260 + 12 * i, 300, 760, 800 - 10 * i), fill=(150, 40 + 20 * i, 50))
            im.save(photos / f"{i:02d}.jpg", quality=92)
    cls = work / "class"
    cls.mkdir()
    pipe = load_pipeline(str(model))
    spec = {"prompt": CLASS_PROMPT, "resolution": 64, "steps": 10, "guidance_scale": 7.5, "seed": 0}
    for i, im in enumerate(generate_class_images(pipe, spec, list(range(class_images)))):
        im.save(cls / f"{i:05d}.png")
    return model, photos, cls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, help="diffusers examples/dreambooth/train_dreambooth_lora.py")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--variant-steps", type=int, default=300, help="steps for the on/off rows")
    ap.add_argument(
        "--short-steps", type=int, default=100, help="a second, short run of both: start-up vs steps"
    )
    ap.add_argument("--class-images", type=int, default=50)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--photos", type=Path, default=SHARED_PHOTOS if SHARED_PHOTOS.is_dir() else None)
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "PYTHONWARNINGS": "ignore"}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ps-bench-") as tmp:
        work = Path(tmp)
        model, photos, cls = make_inputs(work, args.class_images, args.photos)
        common = ["--steps", "--rank", "--prior-images", "--resolution", "--lr", "--seed"]
        values = [args.steps, args.rank, args.class_images, 64, 1e-4, 0]

        def ours(name: str, steps: int, *extra: str) -> None:
            out = work / f"ours-{len(rows)}"
            vals = [steps, *values[1:]]
            cmd = [sys.executable, "-m", "flows.cli", "train", str(photos), "--class-noun", "teapot"]
            cmd += [
                "--out",
                str(out),
                "--base-model",
                str(model),
                "--class-dir",
                str(cls),
                "--identifier",
                "olis",
            ]
            cmd += [x for pair in zip(common, map(str, vals), strict=True) for x in pair]
            cmd += ["--checkpoint-every", "0", "--no-validation", "--quiet", *extra]
            wall, rss, _ = run(cmd, work, env)
            summary = json.loads((out / "training.json").read_text())
            step_ms = summary["timings_s"]["step_ms"]
            rows.append({"run": name, "steps": steps, "wall_s": wall, "step_ms": step_ms, "rss_mib": rss})
            print(f"{name:40s} {steps:5d} steps  wall {wall:6.1f} s  {step_ms:6.1f} ms/step  {rss:6.0f} MiB")

        def reference(steps: int) -> None:
            out = work / f"reference-{len(rows)}"
            cmd = [sys.executable, str(args.reference), "--pretrained_model_name_or_path", str(model)]
            cmd += ["--instance_data_dir", str(photos), "--instance_prompt", INSTANCE_PROMPT]
            cmd += ["--class_data_dir", str(cls), "--class_prompt", CLASS_PROMPT, "--with_prior_preservation"]
            cmd += [
                "--num_class_images",
                str(args.class_images),
                "--resolution",
                "64",
                "--train_batch_size",
                "1",
            ]
            cmd += ["--max_train_steps", str(steps), "--rank", str(args.rank), "--learning_rate", "1e-4"]
            cmd += ["--lr_warmup_steps", "0", "--seed", "0", "--output_dir", str(out)]
            cmd += ["--checkpointing_steps", str(steps + 1)]
            wall, rss, _ = run(cmd, work, env)
            rows.append({"run": "diffusers train_dreambooth_lora.py", "steps": steps, "wall_s": wall,
                         "step_ms": None, "rss_mib": rss})  # fmt: skip
            print(f"{'diffusers train_dreambooth_lora.py':40s} {steps:5d} steps  wall {wall:6.1f} s  "
                  f"{'':14s}  {rss:6.0f} MiB")  # fmt: skip

        if args.reference is not None:
            reference(args.steps)
        ours("product-studio train (CPU opt-ins)", args.steps, *CPU_OPT_INS)
        if args.reference is not None and args.short_steps:
            reference(args.short_steps)
            ours("product-studio train (CPU opt-ins)", args.short_steps, *CPU_OPT_INS)
        if args.variant_steps:
            v = args.variant_steps
            ours("ours, all optimisations on", v, *CPU_OPT_INS)
            ours("ours, defaults (no CPU opt-ins)", v)
            ours("ours, latents not cached", v, *CPU_OPT_INS, "--no-cache-latents")
            ours("ours, eager attention (no SDPA)", v, *CPU_OPT_INS, "--attention", "eager")
            ours("ours, oneDNN convolutions forced", v, "--lean-lora", "--cpu-conv-backend", "mkldnn")
            ours("ours, peft's own LoRA forward", v, "--cpu-conv-backend", "auto")
            ours("ours, gradient checkpointing on", v, *CPU_OPT_INS, "--gradient-checkpointing")
            ours("ours, min-SNR off", v, *CPU_OPT_INS, "--snr-gamma", "0")

    import torch

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, python {platform.python_version()}")  # fmt: skip
    if args.reference is not None:
        ref = [r for r in rows if r["run"].startswith("diffusers")]
        mine = [r for r in rows if r["run"].startswith("product-studio")]
        print(
            f"wall-time ratio ours/reference, {args.steps} steps: {mine[0]['wall_s'] / ref[0]['wall_s']:.3f}"
        )
        if len(ref) == 2 and len(mine) == 2:  # two step counts: split wall time into start-up + per step
            for name, (long, short) in {"reference": ref, "ours": mine}.items():
                per_step = (long["wall_s"] - short["wall_s"]) / (long["steps"] - short["steps"])
                startup = short["wall_s"] - short["steps"] * per_step
                print(f"{name:10s} start-up {startup:5.1f} s, {1000 * per_step:5.1f} ms per step (fitted)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
