"""``make demo``: a private S3 server on loopback, the tiny model, the sample catalogue, then
``product-studio catalogue`` as a user runs it (Prefect's temporary local server), and a local copy of
everything published in ``demo-output/``. The library never imports Prefect: the flow runs through the CLI.

Then the seller's part, through the same commands a seller's operator runs: the cards of the first SKU that
meet their marketplace's rules are approved (``product-studio review --approve``, as the review page will),
``product-studio publish-approved`` copies them to the marketplace bucket and its ``listing.json`` is shown.
``--keep-serving`` leaves the S3 server up afterwards (Ctrl-C stops it), writes ``.demo/env`` (every setting
the demo's commands use) and prints a seller's link with buttons and how to run ``product-studio`` from
another shell.

Every card carries its IPTC label; ``--c2pa`` (``make demo DEMO_ARGS=--c2pa``) also signs them with a test
certificate made in ``.demo/c2pa`` (its CA as the trust anchor ``product-studio verify`` uses).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

STATE = Path.cwd() / ".demo"
OUT = Path.cwd() / "demo-output"
CATALOGUE = "demo-catalogue"

# Small enough for 2 CPU cores in a few minutes; every stage still runs for real.
DEMO_SETTINGS = {
    "PRODUCT_STUDIO_INCOMING": "s3://incoming",
    "PRODUCT_STUDIO_OUTPUT": "s3://output",
    "PRODUCT_STUDIO_MARKETPLACE": "s3://marketplace",
    "PRODUCT_STUDIO_BASE_MODEL": str(STATE / "tiny-sd"),
    "PRODUCT_STUDIO_DEVICE": "cpu",
    "PRODUCT_STUDIO_CLEANER": "grabcut",
    "PRODUCT_STUDIO_WORK_DIR": str(STATE / "work"),
    "PRODUCT_STUDIO_TRAIN__STEPS": "150",
    "PRODUCT_STUDIO_TRAIN__PRIOR_IMAGES": "12",
    "PRODUCT_STUDIO_TRAIN__LEARNING_RATE": "1e-3",
    "PRODUCT_STUDIO_TRAIN__RANK": "8",
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
    # torch's OpenMP threads yield instead of spinning at each barrier: on 2 busy cores one SKU's training
    # swung from 8 s to 238 s without it (the pool demo sets it too).
    "OMP_WAIT_POLICY": "PASSIVE",
}
# The demo's own process builds the tiny models: the libraries' notes and bars stay quiet here as they do in
# the commands it runs (``flows/quiet.py``).
QUIET = {
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
}
ENV_FILE = STATE / "env"
# What a shell needs to drive the demo's buckets with product-studio (written to ENV_FILE).
_ENV_PREFIXES = ("PRODUCT_STUDIO_", "AWS_", "PREFECT_", "HF_HUB_", "DO_NOT_TRACK", "OMP_")


def _models() -> None:
    """The tiny seeded Stable Diffusion and DINO / CLIP encoders, built once and kept in ``.demo``."""
    from product_studio.devkit.tiny_models import build_tiny_encoders, build_tiny_model

    model = Path(os.environ["PRODUCT_STUDIO_BASE_MODEL"])
    if not (model / "model_index.json").exists():  # before the settings, which check it is a model
        print(f"building the tiny seeded Stable Diffusion in {build_tiny_model(model)}")
    encoders = STATE / "tiny-encoders"
    if not (encoders / "clip" / "config.json").exists():
        build_tiny_encoders(encoders)
        print(f"building tiny seeded DINO and CLIP encoders in {encoders}")


def _copy_published(output) -> list[str]:
    """Everything the catalogue published, copied to ``demo-output/``; the keys."""
    shutil.rmtree(OUT, ignore_errors=True)
    keys = output.list(CATALOGUE + "/")
    for key in keys:
        dest = OUT / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(output.read(key))
    return keys


def _c2pa_settings() -> dict[str, str]:
    """A test CA and signing certificate in ``.demo/c2pa``, as the C2PA settings."""
    from product_studio.devkit.certificates import make_test_certificates

    certs = make_test_certificates(STATE / "c2pa")
    print(f"signing cards with a test certificate from {certs.chain} (trust anchor {certs.ca})")
    return {
        "PRODUCT_STUDIO_C2PA__CERT": str(certs.chain),
        "PRODUCT_STUDIO_C2PA__KEY": str(certs.key),
        "PRODUCT_STUDIO_C2PA__TRUST_ANCHORS": str(certs.ca),
    }


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``product-studio ARGS`` as a user runs it, its command line shown first."""
    print(f"running: product-studio {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], check=False)


def _seller_loop(output, marketplace, sku: str) -> int:
    """Approve the SKU's cards that meet their format's rules, publish them, show the listing; live cards."""
    from product_studio.layout import LISTING, sku_key
    from product_studio.manifest import read_published
    from product_studio.review.decisions import card_states

    print(f"\nThe seller's part, for {sku}: approve, then publish-approved", flush=True)
    manifest = read_published(output, CATALOGUE, sku)
    good = [name for name, card, _, _ in card_states(manifest, None) if card.compliance.passed]
    if not good or _cli("review", CATALOGUE, sku, "--approve", *good, "--by", "demo-seller").returncode:
        print(f"  nothing to approve for {sku}")
        return 0
    _cli("publish-approved", CATALOGUE)
    key = sku_key(CATALOGUE, sku, LISTING)
    if not marketplace.exists(key):
        print(f"  no listing at {marketplace.url(key)}")
        return 0
    listing = json.loads(marketplace.read(key))
    print(f"  {marketplace.url(key)} names the live files (sha256 of each, and the card it shows):")
    for card in listing["cards"]:
        print(f"    {card['file']:28} {card['sha256'][:12]}…  {card['card']}")
    return len(listing["cards"])


def write_env_file(environ: dict[str, str] | None = None) -> Path:
    """``.demo/env``: every variable the demo's commands run with, for ``set -a; . .demo/env; set +a``."""
    environ = dict(os.environ if environ is None else environ)
    lines = [f"{k}={shlex.quote(v)}" for k, v in sorted(environ.items()) if k.startswith(_ENV_PREFIXES)]
    ENV_FILE.parent.mkdir(parents=True, exist_ok=True)
    ENV_FILE.write_text(
        "# Written by make demo: the demo's settings, for another shell.\n" + "\n".join(lines) + "\n"
    )
    return ENV_FILE


def _keep_serving(published: list[str]) -> None:
    """Leave the S3 server up; print how to use it from another shell and a seller's link with buttons."""
    env_file = write_env_file()
    link = subprocess.run(
        [sys.executable, "-m", "flows.cli", "review-link", CATALOGUE, "--expires", "1d"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    print("\nThe S3 server keeps running. A seller's page for the catalogue, with buttons (1 day):")
    print(f"  {link.stdout.strip().splitlines()[-1] if link.returncode == 0 else link.stderr.strip()}")
    print("From another shell, in this folder:")
    print(f"  set -a; . {env_file.relative_to(Path.cwd())}; set +a")
    print(f"  .venv/bin/product-studio publish-approved {CATALOGUE}   # puts what you approved live")
    print(f"  .venv/bin/product-studio review {CATALOGUE} {published[0] if published else '<sku>'}")
    print("Ctrl-C stops it.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--c2pa", action="store_true", help="sign every card with a test certificate")
    parser.add_argument(
        "--keep-serving", action="store_true", help="leave the S3 server up at the end (Ctrl-C stops it)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    for key, value in (DEMO_SETTINGS | QUIET | (_c2pa_settings() if args.c2pa else {})).items():
        os.environ.setdefault(key, value)
    from product_studio.devkit.local_s3 import LocalS3
    from product_studio.devkit.samples import upload_sample_catalogue
    from product_studio.settings import Settings

    shutil.rmtree(STATE / "s3", ignore_errors=True)
    shutil.rmtree(STATE / "work", ignore_errors=True)
    with LocalS3(STATE / "s3") as s3:
        os.environ.update(s3.env())
        print(f"S3 server (SeaweedFS) on {s3.endpoint}")
        _models()
        settings = Settings()
        incoming, output = settings.store("incoming"), settings.store("output")
        marketplace = settings.store("marketplace")
        for store in (incoming, output, marketplace):
            store.ensure_bucket()
        upload_sample_catalogue(incoming, CATALOGUE, size=1600)  # phone-sized: detail for a 2000-px main card
        print(f"uploaded the sample catalogue to {incoming.url(CATALOGUE)}/")
        _cli("catalogue", CATALOGUE)
        report = json.loads(output.read(f"{CATALOGUE}/catalogue-report.json"))
        published = [e["sku"] for e in report["skus"] if e["status"] == "published"]
        live = _seller_loop(output, marketplace, published[0]) if published else 0
        keys = _copy_published(output)
        print(f"\nPublished: {len(keys)} objects under {output.url(CATALOGUE)}/")
        if args.keep_serving:
            _keep_serving(published)
    print(f"\nLocal copy of every published file: {OUT}/")
    for entry in report["skus"]:
        if entry["status"] == "published":
            print(f"  review page: {OUT / CATALOGUE / entry['sku'] / 'review' / 'index.html'}")
    print(
        f"How a card says it was made: .venv/bin/product-studio verify {OUT / CATALOGUE}/<sku>/runs/<run>/"
        "cards/<card>"
    )
    if live:
        print(f"{live} approved card(s) of {published[0]} live in the marketplace bucket (listing above).")
    print(
        f"The tiny model has random weights, so generated scenes are noise by design (see README.md).\n"
        f"Demo finished in {time.perf_counter() - started:.0f} s."
    )
    return 0 if report["published"] == len(report["skus"]) and live else 1


if __name__ == "__main__":
    sys.exit(main())
