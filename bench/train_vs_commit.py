"""Benchmark: `product-studio train` now against an earlier checkout of this repository, same machine.

Both trainers train the tiny seeded SD on the same photos and the same pre-generated class images with the
same settings (those of ``train_vs_reference.py``), each with its defaults, alternating, ``--runs`` times
each; the faster run of each counts. Reports wall time and the trainer's own ms/step, as ratios of now over
the earlier checkout.

    git worktree add /tmp/before <commit>
    python bench/train_vs_commit.py --before /tmp/before [--before-module product_studio.cli] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_vs_reference import SHARED_PHOTOS, make_class_images, make_inputs, run

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="an earlier checkout of product-studio")
    ap.add_argument("--before-module", default="flows.cli", help="its CLI module")
    ap.add_argument("--before-flags", default="", help="extra flags for the earlier trainer")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--class-images", type=int, default=50)
    ap.add_argument("--photos", type=Path, default=SHARED_PHOTOS if SHARED_PHOTOS.is_dir() else None)
    args = ap.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "PYTHONWARNINGS": "ignore"}
    trainers = {
        "before": (args.before.resolve(), args.before_module, args.before_flags.split()),
        "now (defaults)": (ROOT, "flows.cli", []),
    }
    best: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="ps-bench-") as tmp:
        work = Path(tmp)
        model, photos = make_inputs(work, args.photos)
        cls = make_class_images(work, model, args.class_images)
        for attempt in range(args.runs):
            for name, (root, module, extra) in trainers.items():
                out = work / f"{name.split()[0]}-{attempt}"
                cmd = [sys.executable, "-m", module, "train", str(photos), "--class-noun", "teapot"]
                cmd += ["--out", str(out), "--base-model", str(model), "--class-dir", str(cls)]
                cmd += [
                    "--identifier",
                    "olis",
                    "--steps",
                    str(args.steps),
                    "--rank",
                    "4",
                    "--resolution",
                    "64",
                ]
                cmd += ["--prior-images", str(args.class_images), "--learning-rate", "1e-4", "--seed", "0"]
                cmd += ["--checkpoint-every", "0", "--no-validation", "--quiet", *extra]
                wall, rss, _ = run(cmd, root, {**env, "PYTHONPATH": str(root)})
                step_ms = json.loads((out / "training.json").read_text())["timings_s"]["step_ms"]
                print(
                    f"run {attempt + 1}  {name:18s} wall {wall:6.1f} s  {step_ms:6.2f} ms/step  {rss:.0f} MiB"
                )
                row = {"wall_s": wall, "step_ms": step_ms, "rss_mib": rss}
                if name not in best or step_ms < best[name]["step_ms"]:
                    best[name] = row
    import torch

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
          f"{args.steps} steps, best of {args.runs}")  # fmt: skip
    base = best["before"]
    for name, row in best.items():
        print(f"{name:18s} {row['step_ms']:6.2f} ms/step ({row['step_ms'] / base['step_ms']:.2f}x)  "
              f"wall {row['wall_s']:5.1f} s ({row['wall_s'] / base['wall_s']:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
