"""Benchmark: a 12-SKU catalogue of real photos through the catalogue flow on one worker (this machine).

Builds the catalogue from ``../shared/dreambench-products`` (6 subjects, two SKUs each from different photos,
4 photos an SKU), uploads it to a private S3 server on 127.0.0.1, runs ``flows.catalogue.catalogue_flow``
in-process with the tiny seeded SD (40 training steps, GrabCut, tiny encoders), and reports the wall time and
each stage's share of the SKUs' stage time (from the published manifests' ``timings_s``).

    python bench/catalogue.py [--steps 40] [--json catalogue.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from product_studio.storage import Store

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "dreambench-products"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="training steps per SKU")
    ap.add_argument("--photos", type=Path, default=PHOTOS)
    ap.add_argument("--json", type=Path)
    return ap.parse_args()


def settings_env(work: Path, steps: int) -> dict[str, str]:
    """The catalogue flow's settings: CPU, GrabCut, small renders, every card kept whatever its scores."""
    return {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "PREFECT_HOME": str(work / "prefect"),
        "PRODUCT_STUDIO_INCOMING": "s3://incoming",
        "PRODUCT_STUDIO_OUTPUT": "s3://output",
        "PRODUCT_STUDIO_DEVICE": "cpu",
        "PRODUCT_STUDIO_CLEANER": "grabcut",
        "PRODUCT_STUDIO_WORK_DIR": str(work / "work"),
        "PRODUCT_STUDIO_TRAIN__STEPS": str(steps),
        "PRODUCT_STUDIO_TRAIN__PRIOR_IMAGES": "8",
        "PRODUCT_STUDIO_TRAIN__VALIDATION_STEPS": "10",
        "PRODUCT_STUDIO_RENDER__STEPS": "10",
        "PRODUCT_STUDIO_RENDER__PRIOR_STEPS": "10",
        "PRODUCT_STUDIO_SCENE_COUNT": "2",
        "PRODUCT_STUDIO_DEFAULT_MARKETPLACES": '["amazon-main", "ebay-square"]',
        "PRODUCT_STUDIO_SCORES__MIN_IDENTITY": "-1",
        "PRODUCT_STUDIO_SCORES__MIN_PROMPT": "-1",
    }


def use_tiny_models(work: Path) -> None:
    """Build the tiny seeded SD and encoders in ``work`` and point the settings at them."""
    from product_studio.devkit.tiny_models import build_tiny_encoders, build_tiny_model

    os.environ["PRODUCT_STUDIO_BASE_MODEL"] = str(build_tiny_model(work / "tiny-sd"))
    dino, clip = build_tiny_encoders(work / "encoders")
    os.environ["PRODUCT_STUDIO_SCORES__DINO_MODEL"], os.environ["PRODUCT_STUDIO_SCORES__CLIP_MODEL"] = (
        str(dino),
        str(clip),
    )


def upload_catalogue(incoming: Store, photos: Path, classes: dict[str, str]) -> int:
    """Two SKUs a subject (its first 4 photos, its last 4) under ``bench/``; the number of SKUs."""
    skus = 0
    for subject in sorted(p for p in photos.iterdir() if p.is_dir()):
        subject_photos = sorted(subject.glob("*.jpg"))
        for n, chosen in enumerate((subject_photos[:4], subject_photos[-4:])):
            sku = f"{subject.name.replace('_', '-')}-{n}"
            spec = {"class_noun": classes[subject.name], "title": subject.name}
            incoming.write(f"bench/{sku}/product.json", json.dumps(spec).encode())
            for photo in chosen:
                incoming.write(f"bench/{sku}/photos/{photo.name}", photo.read_bytes())
            skus += 1
    incoming.write("bench/catalogue.json", b"{}")
    return skus


def run_catalogue(output: Store) -> tuple[float, list, dict[str, float]]:
    """Wall seconds of the catalogue flow, its outcomes and the published SKUs' seconds by stage."""
    from flows.catalogue import catalogue_flow

    started = time.perf_counter()
    outcomes = catalogue_flow("bench")
    wall = time.perf_counter() - started
    stages: dict[str, float] = {}
    for outcome in outcomes:
        if outcome.status == "published":
            manifest = json.loads(output.read(f"bench/{outcome.sku}/manifest.json"))
            for stage, seconds in manifest["timings_s"].items():
                stages[stage] = stages.get(stage, 0.0) + seconds
    return wall, outcomes, stages


def print_report(steps: int, skus: int, published: int, wall: float, stages: dict[str, float]) -> None:
    total = sum(stages.values())
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs; {skus} SKUs, {published} published; "
          f"{steps} steps; tiny SD; GrabCut")  # fmt: skip
    print(f"catalogue wall time: {wall:.1f} s ({3600 * skus / wall:.0f} SKUs an hour); "
          f"outside the stages: {wall - total:.1f} s")  # fmt: skip
    print("| stage | seconds | share of stage time |\n|---|---:|---:|")
    for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"| {stage} | {seconds:.1f} | {seconds / total:.0%} |")


def main() -> None:
    args = parse_args()
    if not args.photos.is_dir():
        raise SystemExit(f"{args.photos} is missing: this benchmark uses the shared DreamBench photos")
    sys.path.insert(0, str(ROOT))
    work = Path(tempfile.mkdtemp(prefix="ps-catalogue-"))
    os.environ.update(settings_env(work, args.steps))
    from product_studio.devkit.local_s3 import LocalS3
    from product_studio.evaluation import read_classes

    use_tiny_models(work)
    classes = read_classes(args.photos / "prompts_and_classes.txt")
    with LocalS3(work / "s3") as s3:
        os.environ.update(s3.env())
        from product_studio.storage import Store

        incoming, output = Store("s3://incoming"), Store("s3://output")
        incoming.ensure_bucket()
        output.ensure_bucket()
        skus = upload_catalogue(incoming, args.photos, classes)
        wall, outcomes, stages = run_catalogue(output)
    published = sum(o.status == "published" for o in outcomes)
    print_report(args.steps, skus, published, wall, stages)
    if args.json:
        args.json.write_text(json.dumps({"wall_s": wall, "skus": skus, "stages_s": stages}, indent=2))


if __name__ == "__main__":
    main()
