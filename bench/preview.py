"""Benchmark: how soon a seller sees the first cards -- time to the preview against the SKU's whole run.

One SKU through the SKU flow (``flows.sku.sku_flow``, in-process) on the tiny seeded SD, against a private S3
server on 127.0.0.1: the sample teapot's photos drawn in code (or, with ``--photos DIR``, real ones such as
``../shared/dreambench-products/teapot``), two composite scenes and one generate scene in two formats, as the
demo makes them. The preview (main image and composite cards) is published before class images and
training; the generate cards after. Reported: seconds to the preview (``timings_s.preview``), the whole run
(the flow's own seconds, model load included), and their ratio. Target (issue 37): <= 0.35.

    python bench/preview.py [--steps 150] [--photos DIR] [--json preview.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from catalogue import settings_env, use_tiny_models  # noqa: E402

SCENES = ["oak-table", "kitchen-counter", "in-hand"]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150, help="training steps (the demo's)")
    ap.add_argument("--photos", type=Path, help="a folder of real photos of one teapot")
    ap.add_argument("--json", type=Path)
    return ap.parse_args()


def upload(incoming, photos: Path | None) -> None:
    """One teapot SKU, ``bench-preview/teapot``: the photos given, else four drawn in code."""
    from product_studio.devkit.samples import SAMPLE_PRODUCTS, product_photo

    spec = {"class_noun": "teapot", "title": "Teapot", "scenes": SCENES}
    incoming.write("bench-preview/teapot/product.json", json.dumps(spec).encode())
    if photos is not None:
        for path in sorted(photos.glob("*.jpg"))[:4]:
            incoming.write(f"bench-preview/teapot/photos/{path.name}", path.read_bytes())
        return
    draw = SAMPLE_PRODUCTS["teapot-teal"][2]
    for angle in range(4):
        path = Path(tempfile.mkdtemp()) / f"{angle:02d}.jpg"
        product_photo(draw, angle, 1024, seed=angle).save(path, quality=92)
        incoming.write(f"bench-preview/teapot/photos/{path.name}", path.read_bytes())


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="ps-preview-"))
    os.environ.update(settings_env(work, args.steps))
    os.environ["PRODUCT_STUDIO_TRAIN__PRIOR_IMAGES"] = "8"
    from product_studio.devkit.local_s3 import LocalS3

    use_tiny_models(work)
    with LocalS3(work / "s3") as s3:
        os.environ.update(s3.env())
        from flows.sku import sku_flow
        from product_studio.storage import Store

        incoming, output = Store("s3://incoming"), Store("s3://output")
        incoming.ensure_bucket()
        output.ensure_bucket()
        upload(incoming, args.photos)
        outcome = sku_flow("bench-preview", "teapot")
        manifest = json.loads(output.read("bench-preview/teapot/manifest.json"))
    preview, whole = manifest["timings_s"]["preview"], outcome.seconds
    cards = [c for c in manifest["cards"] if c["status"] == "published"]
    early = sum(1 for c in cards if c["render"]["mode"] != "generate")
    print(f"tiny SD, {args.steps} steps, {len(cards)} cards ({early} in the preview)")
    print(
        f"time to preview: {preview:.1f} s; whole run: {whole:.1f} s; ratio {preview / whole:.2f} (<= 0.35)"
    )
    print("stages:", ", ".join(f"{k} {v:.1f} s" for k, v in manifest["timings_s"].items()))
    if args.json:
        args.json.write_text(json.dumps({"preview_s": preview, "whole_s": whole, "ratio": preview / whole}))


if __name__ == "__main__":
    main()
