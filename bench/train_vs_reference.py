"""Benchmark: `product-studio train` against diffusers' reference DreamBooth LoRA script, same machine.

Both train the same base model on the same photos with the same steps, class images, resolution, rank,
learning rate, batch (1 instance + 1 class image) and seed, in the same Python environment (same torch).
Wall time is the whole process, start-up included.

The default protocol is cold and fair: each trainer generates its own class images (ours into a fresh
``--priors-dir``, the reference into a fresh ``--class_data_dir``), the two alternate for ``--runs`` rounds
and the faster run of each counts. ``--shared-class-images`` instead gives both the same pre-generated set
(steps only). Our trainer is then run with each optimisation turned off, one at a time.

    python bench/train_vs_reference.py --reference /path/to/train_dreambooth_lora.py [--steps 1000]
    python bench/train_vs_reference.py --family flux2-klein \
        --reference /path/to/train_dreambooth_lora_flux2_klein.py [--steps 300]

``--family flux2-klein`` runs both on the tiny FLUX.2 [klein] instead of the tiny SD (the reference then reads
the text encoder's layers 9, 18 and 27, as the klein pipeline and our trainer do).

The reference script is not part of this repository (see bench/README.md for where to get it) and needs
torchvision, which must import beside the torch of the environment you run this in.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "dreambench-products" / "teapot"
OURS = "product-studio train (defaults)"
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


def make_inputs(work: Path, photos: Path | None, family: str) -> tuple[Path, Path]:
    """The tiny model of ``family`` and the instance photos (drawn in code when the real ones are not on this
    machine)."""
    from PIL import Image, ImageDraw

    from product_studio.devkit.tiny_flux2 import build_tiny_flux2_klein
    from product_studio.devkit.tiny_models import build_tiny_model

    if family == "flux2-klein":
        model = build_tiny_flux2_klein(work / "tiny-klein")
    else:
        model = build_tiny_model(work / "tiny-sd")
    if photos is None:  # phone-sized JPEGs
        photos = work / "photos"
        photos.mkdir()
        for i in range(5):
            im = Image.new("RGB", (1024, 1024), (235 - 9 * i, 228, 215))
            ImageDraw.Draw(im).ellipse((260 + 12 * i, 300, 760, 800 - 10 * i), fill=(150, 40 + 20 * i, 50))
            im.save(photos / f"{i:02d}.jpg", quality=92)
    return model, photos


def make_class_images(work: Path, model: Path, count: int) -> Path:
    """One pre-generated class-image set, for ``--shared-class-images`` and the on/off rows."""
    from product_studio.models import load_pipeline
    from product_studio.training.priors import generate_class_images

    cls = work / "class"
    cls.mkdir()
    pipe = load_pipeline(str(model))
    spec = {"prompt": CLASS_PROMPT, "resolution": 64, "steps": 10, "guidance_scale": 7.5, "seed": 0}
    for i, im in enumerate(generate_class_images(pipe, spec, list(range(count)))):
        im.save(cls / f"{i:05d}.png")
    return cls


def best(rows: list[dict], prefix: str, steps: int) -> dict | None:
    """The fastest run whose name starts with ``prefix`` at ``steps``."""
    runs = [r for r in rows if r["run"].startswith(prefix) and r["steps"] == steps]
    return min(runs, key=lambda r: r["wall_s"]) if runs else None


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--reference",
        type=Path,
        help="diffusers' examples/dreambooth/train_dreambooth_lora.py, or …_flux2_klein.py with --family",
    )
    ap.add_argument(
        "--reference-args", default="", help="more arguments for the reference, e.g. '--cache_latents'"
    )
    ap.add_argument("--family", choices=["sd", "flux2-klein"], default="sd", help="the tiny model both train")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=2, help="alternating runs of each trainer; the faster counts")
    ap.add_argument("--variant-steps", type=int, default=300, help="steps for the on/off rows (0: none)")
    ap.add_argument(
        "--short-steps", type=int, default=0, help="also one short run of both: start-up vs steps"
    )
    ap.add_argument("--class-images", type=int, default=8)
    ap.add_argument(
        "--shared-class-images",
        action="store_true",
        help="give both trainers the same pre-generated class images instead of each generating its own",
    )
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--photos", type=Path, default=SHARED_PHOTOS if SHARED_PHOTOS.is_dir() else None)
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    return ap.parse_args()


class Trainers:
    """Runs either trainer on the same model and photos in ``work``; keeps one row per run and prints it."""

    def __init__(
        self,
        args: argparse.Namespace,
        env: dict[str, str],
        work: Path,
        model: Path,
        photos: Path,
        shared: Path | None,
    ) -> None:
        self.args, self.env, self.work, self.model, self.photos = args, env, work, model, photos
        self.shared = shared  # the pre-generated class images of --shared-class-images
        self.rows: list[dict] = []
        self.ref_name = f"diffusers {args.reference.name if args.reference else 'reference'}"
        self.ref_name += f" {args.reference_args}" if args.reference_args else ""

    def ours_command(self, steps: int, extra: tuple[str, ...], class_dir: Path | None) -> list[str]:
        """``product-studio train`` with the settings both share; without ``class_dir`` it makes its own."""
        args, work = self.args, self.work
        out = work / f"ours-{len(self.rows)}"
        cmd = [sys.executable, "-m", "flows.cli", "train", str(self.photos), "--class-noun", "teapot"]
        cmd += ["--out", str(out), "--base-model", str(self.model), "--identifier", "olis"]
        if class_dir:
            cmd += ["--class-dir", str(class_dir)]
        else:  # a fresh, empty class-image cache: the run generates its class images, cold
            cmd += ["--priors-dir", str(work / f"priors-{len(self.rows)}")]
        common = ["--steps", "--rank", "--prior-images", "--resolution", "--learning-rate", "--seed"]
        values = [steps, args.rank, args.class_images, 64, 1e-4, 0]
        cmd += [x for pair in zip(common, map(str, values), strict=True) for x in pair]
        return [*cmd, "--checkpoint-every", "0", "--no-validation", "--quiet", *extra]

    def ours(self, name: str, steps: int, *extra: str, class_dir: Path | None = None) -> None:
        """One run of our trainer, on ``class_dir`` or else the shared class images (if any)."""
        cmd = self.ours_command(steps, extra, class_dir or self.shared)
        wall, rss, output = run(cmd, self.work, self.env)
        summary = json.loads(output[output.index("{") : output.rindex("}") + 1])
        t = summary["timings_s"]
        phases = {"load_model_s": t["load_model_s"], "class_images_s": t["class_images_s"],
                  "loop_s": t["loop_s"]}  # fmt: skip
        phases["other_s"] = round(wall - sum(phases.values()), 2)
        row = {"run": name, "steps": steps, "wall_s": wall, "step_ms": t["step_ms"], "rss_mib": rss, **phases}
        self.rows.append(row)
        print(f"{name:40s} {steps:5d} steps  wall {wall:6.1f} s  {t['step_ms']:6.1f} ms/step"
              f"  {rss:6.0f} MiB"
              f"  (model {phases['load_model_s']:.1f} s, class images {phases['class_images_s']:.1f} s,"
              f" loop {phases['loop_s']:.1f} s, other {phases['other_s']:.1f} s)")  # fmt: skip

    def reference_command(self, steps: int) -> list[str]:
        """The reference script with the same settings as ours."""
        args = self.args
        out = self.work / f"reference-{len(self.rows)}"
        cls = self.shared or self.work / f"reference-class-{len(self.rows)}"  # fresh: it generates its own
        cmd = [sys.executable, str(args.reference), "--pretrained_model_name_or_path", str(self.model)]
        cmd += ["--instance_data_dir", str(self.photos), "--instance_prompt", INSTANCE_PROMPT]
        cmd += ["--class_data_dir", str(cls), "--class_prompt", CLASS_PROMPT, "--with_prior_preservation"]
        cmd += ["--num_class_images", str(args.class_images), "--resolution", "64"]
        cmd += ["--train_batch_size", "1", "--max_train_steps", str(steps), "--rank", str(args.rank)]
        cmd += ["--learning_rate", "1e-4", "--lr_warmup_steps", "0", "--seed", "0", "--output_dir", str(out)]
        cmd += ["--checkpointing_steps", str(steps + 1)]
        if args.family == "flux2-klein":
            # The klein pipeline's (and our trainer's) text-encoder layers; the script says 10 20 30.
            cmd += ["--text_encoder_out_layers", "9", "18", "27"]
        return cmd + shlex.split(args.reference_args)

    def reference(self, steps: int) -> None:
        """One run of the reference script."""
        wall, rss, _ = run(self.reference_command(steps), self.work, self.env)
        self.rows.append(
            {"run": self.ref_name, "steps": steps, "wall_s": wall, "step_ms": None, "rss_mib": rss}
        )
        print(f"{self.ref_name:40s} {steps:5d} steps  wall {wall:6.1f} s  {'':14s}  {rss:6.0f} MiB")


def race(trainers: Trainers, args: argparse.Namespace) -> None:
    """Both trainers, alternating, at ``--steps`` (and once at ``--short-steps``)."""
    for _ in range(args.runs):  # alternate, so a slow moment of the machine hits both alike
        if args.reference is not None:
            trainers.reference(args.steps)
        trainers.ours(OURS, args.steps)
    if args.short_steps:
        if args.reference is not None:
            trainers.reference(args.short_steps)
        trainers.ours(OURS, args.short_steps)


def variants(trainers: Trainers, args: argparse.Namespace) -> None:
    """Our trainer at ``--variant-steps`` with each optimisation turned off, one at a time."""
    cls = trainers.shared or make_class_images(trainers.work, trainers.model, args.class_images)
    runs = [
        ("ours, defaults", []),
        ("ours, gradient checkpointing on", ["--gradient-checkpointing"]),
        ("ours, min-SNR off", ["--snr-gamma", "0"]),
    ]
    if args.family == "flux2-klein":  # min-SNR is an SD setting
        runs = runs[:2]
    for name, extra in runs:
        trainers.ours(name, args.variant_steps, *extra, class_dir=cls)


def print_summary(rows: list[dict], args: argparse.Namespace) -> None:
    """The machine, the protocol, the wall-time ratio and, with ``--short-steps``, start-up vs per step."""
    import torch

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, python {platform.python_version()}")  # fmt: skip
    protocol = "shared pre-generated" if args.shared_class_images else "each trainer generates its own"
    print(f"protocol: tiny {args.family}, {args.class_images} class images, {protocol};"
          f" best of {args.runs} alternating runs")  # fmt: skip
    ref = best(rows, "diffusers", args.steps)
    mine = best(rows, OURS, args.steps)
    if ref and mine:
        ratio = mine["wall_s"] / ref["wall_s"]
        print(f"wall-time ratio {OURS} / reference, {args.steps} steps: {ratio:.3f}"
              f" ({mine['wall_s']:.1f} s / {ref['wall_s']:.1f} s)")  # fmt: skip
    if args.short_steps and ref:  # two step counts: split wall time into start-up + per step
        for name, prefix in {"reference": "diffusers", "ours": OURS}.items():
            long, short = best(rows, prefix, args.steps), best(rows, prefix, args.short_steps)
            per_step = (long["wall_s"] - short["wall_s"]) / (long["steps"] - short["steps"])
            startup = short["wall_s"] - short["steps"] * per_step
            print(f"{name:10s} start-up {startup:5.1f} s, {1000 * per_step:5.1f} ms per step (fitted)")


def main() -> None:
    args = parse_args()
    # The children's environment: this process's before it imports the libraries.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory(prefix="ps-bench-") as tmp:
        work = Path(tmp)
        model, photos = make_inputs(work, args.photos, args.family)
        shared = make_class_images(work, model, args.class_images) if args.shared_class_images else None
        trainers = Trainers(args, env, work, model, photos, shared)
        race(trainers, args)
        if args.variant_steps:
            variants(trainers, args)
    print_summary(trainers.rows, args)
    if args.json:
        args.json.write_text(json.dumps(trainers.rows, indent=2))


if __name__ == "__main__":
    main()
