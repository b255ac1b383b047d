"""The ``make demo`` driver (not a flow): a private S3 server on loopback, the tiny model, the sample
catalogue, the catalogue flow through Prefect, and a local copy of everything published in ``demo-output/``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".demo"
OUT = ROOT / "demo-output"
CATALOGUE = "demo-catalogue"

# Small enough for 2 CPU cores in a few minutes; every stage still runs for real.
DEMO_SETTINGS = {
    "PRODUCT_STUDIO_INCOMING": "s3://incoming",
    "PRODUCT_STUDIO_OUTPUT": "s3://output",
    "PRODUCT_STUDIO_BASE_MODEL": str(STATE / "tiny-sd"),
    "PRODUCT_STUDIO_DEVICE": "cpu",
    "PRODUCT_STUDIO_CLEANER": "grabcut",
    "PRODUCT_STUDIO_WORK_DIR": str(STATE / "work"),
    "PRODUCT_STUDIO_TRAIN__STEPS": "150",
    "PRODUCT_STUDIO_TRAIN__PRIOR_IMAGES": "12",
    "PRODUCT_STUDIO_TRAIN__LEARNING_RATE": "1e-3",
    "PRODUCT_STUDIO_TRAIN__RANK": "8",
    # Speed-ups for small models on a CPU (opt-in; a GPU run gains nothing from them).
    "PRODUCT_STUDIO_TRAIN__LEAN_LORA": "true",
    "PRODUCT_STUDIO_TRAIN__CPU_CONV_BACKEND": "auto",
    "PRODUCT_STUDIO_RENDER__STEPS": "10",
    "PRODUCT_STUDIO_RENDER__PRIOR_STEPS": "10",
    "PRODUCT_STUDIO_DEFAULT_MARKETPLACES": '["amazon-main", "ebay-square", "wildberries-vertical"]',
    "PRODUCT_STUDIO_SCENE_COUNT": "2",
    # Tiny seeded encoders: the scores are computed for real and mean nothing, so the gate lets all through.
    "PRODUCT_STUDIO_SCORES__DINO_MODEL": str(STATE / "tiny-encoders" / "dino"),
    "PRODUCT_STUDIO_SCORES__CLIP_MODEL": str(STATE / "tiny-encoders" / "clip"),
    "PRODUCT_STUDIO_SCORES__MIN_IDENTITY": "-1",
    "PRODUCT_STUDIO_SCORES__MIN_PROMPT": "-1",
    "HF_HUB_OFFLINE": "1",
}


def main() -> int:
    started = time.perf_counter()
    for key, value in DEMO_SETTINGS.items():
        os.environ.setdefault(key, value)
    from product_studio.devkit.local_s3 import LocalS3
    from product_studio.devkit.samples import upload_sample_catalogue
    from product_studio.devkit.tiny_models import build_tiny_encoders, build_tiny_model
    from product_studio.settings import Settings
    from product_studio.storage import Store

    shutil.rmtree(STATE / "s3", ignore_errors=True)
    shutil.rmtree(STATE / "work", ignore_errors=True)
    with LocalS3(STATE / "s3") as s3:
        os.environ.update(s3.env())
        print(f"S3 server (SeaweedFS) on {s3.endpoint}")
        model = Path(os.environ["PRODUCT_STUDIO_BASE_MODEL"])
        if not (model / "model_index.json").exists():  # before the settings, which check it is a model
            print(f"building the tiny seeded Stable Diffusion in {build_tiny_model(model)}")
        encoders = STATE / "tiny-encoders"
        if not (encoders / "clip" / "config.json").exists():
            build_tiny_encoders(encoders)
            print(f"building tiny seeded DINO and CLIP encoders in {encoders}")
        settings = Settings()
        incoming, output = Store(settings.incoming), Store(settings.output)
        incoming.ensure_bucket()
        output.ensure_bucket()
        upload_sample_catalogue(incoming, CATALOGUE)
        print(f"uploaded the sample catalogue to {incoming.url(CATALOGUE)}/")

        from flows.catalogue import catalogue_flow

        outcomes = catalogue_flow(CATALOGUE)

        shutil.rmtree(OUT, ignore_errors=True)
        keys = output.list(CATALOGUE + "/")
        for key in keys:
            dest = OUT / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(output.read(key))
        print("\nPublished objects:")
        for key in keys:
            print(f"  {output.url(key)}")
        print("\nSKU outcomes:")
        for o in outcomes:
            print(f"  {o.status:9} {o.sku}: {o.manifest or o.error}")
            for p in o.problems:
                print(f"            photo not used: {p.reason}")
    print(f"\nLocal copy of every published file: {OUT}/")
    for o in outcomes:
        if o.status == "published":
            print(f"  review page: {OUT / CATALOGUE / o.sku / 'review' / 'index.html'}")
    print(
        f"The tiny model has random weights, so generated scenes are noise by design (see README).\n"
        f"Demo finished in {time.perf_counter() - started:.0f} s."
    )
    return 0 if all(o.status == "published" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
