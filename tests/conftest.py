"""Shared fixtures: a real S3 server on loopback, the tiny seeded model, sample photos made in code."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

# Before anything imports Prefect or the hub client: no telemetry, no downloads, state kept local.
# Each pytest-xdist worker (`pytest -n 2`, if installed) has a Prefect home, and so a database, of its own.
os.environ["PREFECT_HOME"] = (
    os.environ.get("PREFECT_HOME") or os.path.join(tempfile.gettempdir(), "product-studio-test-prefect")
) + (f"-{os.environ['PYTEST_XDIST_WORKER']}" if "PYTEST_XDIST_WORKER" in os.environ else "")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
# One intra-op thread in every process the tests start (this one, batch runs, the CLI, benchmarks): the tiny
# models gain nothing from a second, and torch's OpenMP threads spin-wait at every op's barrier, so two
# processes of two threads on two cores (a test and its worker, or the suite and any other job) made each
# op cost a scheduler slice: bench/gpu.py --tiny took 385 s instead of 47 s beside another suite (issue 33).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# A suite started from a script's background job (`make test &`) inherits SIGINT ignored, and so would every
# process it starts: the tests that stop the demo or serve with Ctrl-C need it back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest

from product_studio import storage
from product_studio.devkit.local_s3 import LocalS3
from product_studio.storage import Store, make_s3_client


@pytest.fixture(autouse=True)
def _fresh_s3_clients():
    """No test sees another's shared S3 client (nor the event hooks it may have added to it)."""
    yield
    storage._clients.clear()


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server (its own database) for every test of the session that runs a flow; started
    by the first that asks, stopped when the session ends."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    with LocalS3(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server: LocalS3, monkeypatch: pytest.MonkeyPatch) -> LocalS3:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture
def buckets(s3_env: LocalS3) -> tuple[Store, Store]:
    """Fresh incoming and output buckets for one test."""
    tag = uuid.uuid4().hex[:10]
    # Each its own client: tests hook faults and recorders onto a store's client.
    incoming = Store(f"s3://incoming-{tag}", client=make_s3_client())
    output = Store(f"s3://output-{tag}", client=make_s3_client())
    incoming.ensure_bucket()
    output.ensure_bucket()
    return incoming, output


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny seeded Stable Diffusion, written by the CLI exactly as a user would."""
    from flows.cli import main

    path = tmp_path_factory.mktemp("models") / "tiny-sd"
    assert main(["tiny-model", str(path)]) == 0
    return path


@pytest.fixture
def tiny_pipe(tiny_model: Path):
    from product_studio.models import load_pipeline

    return load_pipeline(str(tiny_model))


@pytest.fixture(scope="session")
def tiny_sdxl_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny seeded SDXL (two text encoders, micro-conditioning), written by the CLI."""
    from flows.cli import main

    path = tmp_path_factory.mktemp("models") / "tiny-sdxl"
    assert main(["tiny-model", str(path), "--family", "sdxl"]) == 0
    return path


@pytest.fixture(scope="session")
def tiny_klein_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny seeded FLUX.2 [klein] (transformer, VAE, Qwen3 encoder, Qwen2 tokenizer), by the CLI."""
    from flows.cli import main

    path = tmp_path_factory.mktemp("models") / "tiny-klein"
    assert main(["tiny-model", str(path), "--family", "flux2-klein"]) == 0
    return path


@pytest.fixture
def make_manifest():
    """The smallest valid manifest of an SKU's run: what the review page and publishing need."""
    from product_studio.manifest import Manifest

    def make(sku: str, run: str = "r1") -> Manifest:
        training = {
            "loss_curve": "training/loss.png",
            "validation": [],
            "resumed_from_step": 0,
            "timings_s": {},
        }
        lora = {"file": "lora/x.safetensors", "rank": 4, "alpha": 4, "steps": 1, "resolution": 64}
        return Manifest.model_validate(
            {
                "catalogue_id": "cat",
                "sku": sku,
                "run": run,
                "title": "A <i>mug</i>",
                "class_noun": "mug",
                "identifier": "olis",
                "instance_prompt": "a photo of olis mug",
                "class_prompt": "a photo of a mug",
                "base_model": {"id": "tiny", "revision": "main"},
                "cleaner": "grabcut",
                "created": "2026-11-27T00:00:00+00:00",
                "inputs": {"photos": [], "problems": []},
                "cutouts": [],
                "lora": {**lora, "final_loss": 0.1, "settings": {}, "training": training},
                "cards": [],
                "timings_s": {},
                "versions": {"product_studio": "0.1.0"},
            }
        )

    return make


@pytest.fixture(scope="session")
def tiny_encoders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Tiny seeded DINO and CLIP folders, written by the CLI exactly as a user would."""
    from flows.cli import main

    path = tmp_path_factory.mktemp("encoders")
    assert main(["tiny-encoders", str(path)]) == 0
    return path / "dino", path / "clip"


@pytest.fixture(scope="session")
def xmp_of():
    """The XMP properties exiv2 (pyexiv2) finds in a file's bytes: a reader independent of the Pillow code
    that writes cards' labels."""
    import pyexiv2

    def read(data: bytes) -> dict[str, str]:
        image = pyexiv2.ImageData(data)
        try:
            return image.read_xmp()
        finally:
            image.close()

    return read


@pytest.fixture(scope="session")
def c2pa_of():
    """c2pa-python's own Reader on a JPEG's bytes: (validation state, active manifest, validation results);
    ``anchors`` (a PEM file) are the trusted CAs."""
    import io

    import c2pa

    def read(data: bytes, anchors: Path | None = None) -> tuple[str, dict, dict]:
        settings = {"trust": {"trust_anchors": anchors.read_text()}} if anchors else {}
        with (
            c2pa.Context.from_dict(settings) as context,
            c2pa.Reader("image/jpeg", io.BytesIO(data), None, context) as reader,
        ):
            return (
                reader.get_validation_state(),
                reader.get_active_manifest(),
                reader.get_validation_results(),
            )

    return read


@pytest.fixture(scope="session")
def sellers_pixels_difference():
    """The composite contract's measure: the mean absolute difference between a card (an image or its file)
    and the Lanczos-scaled cutout over the cutout's opaque pixels 2 px in from its edge, the product at
    ``box``; asserts that at least ``min_inner`` of the box is such pixels."""
    import numpy as np
    from PIL import Image

    def difference(card, cutout, box: tuple[int, ...], min_inner: float = 0.1) -> float:
        card = card if isinstance(card, Image.Image) else Image.open(card)
        pixels = np.asarray(card.convert("RGB"), np.float32)
        cutout = cutout.convert("RGBA")
        bbox = cutout.getchannel("A").point(lambda v: 255 if v >= 128 else 0).getbbox()
        left, top, right, bottom = box
        scaled = cutout.crop(bbox).resize((right - left, bottom - top), Image.Resampling.LANCZOS)
        opaque = np.asarray(scaled.getchannel("A")) == 255
        inner = opaque.copy()
        for axis in (0, 1):
            for shift in (-2, -1, 1, 2):
                inner &= np.roll(opaque, shift, axis=axis)
        assert inner.sum() > min_inner * opaque.size
        want = np.asarray(scaled.convert("RGB"), np.float32)[inner]
        return float(np.abs(pixels[top:bottom, left:right][inner] - want).mean())

    return difference


@pytest.fixture
def sellers_product_kept(sellers_pixels_difference):
    """The composite contract by the card's light: a ``keep`` card shows the seller's pixels (mean absolute
    difference <= 4 over the opaque pixels 2 px inside the edge); a ``match`` (relit) card shows them under a
    smooth light: their high frequencies and hue, measured on the card itself (``relight``'s checks)."""
    import numpy as np
    from PIL import Image

    from product_studio.rendering import relight

    def check(card, cutout, box: tuple[int, ...], light_mode: str, min_inner: float = 0.1) -> None:
        if light_mode == "keep":
            assert sellers_pixels_difference(card, cutout, box, min_inner) <= 4.0
            return
        assert light_mode == "match", light_mode
        card = card if isinstance(card, Image.Image) else Image.open(card)
        cutout = cutout.convert("RGBA")
        bbox = cutout.getchannel("A").point(lambda v: 255 if v >= 128 else 0).getbbox()
        left, top, right, bottom = box
        scaled = cutout.crop(bbox).resize((right - left, bottom - top), Image.Resampling.LANCZOS)
        inside = relight.interior(np.asarray(scaled.getchannel("A")))
        assert inside.sum() > min_inner * inside.size
        seller = np.asarray(scaled.convert("RGB"), np.float32)
        shown = np.asarray(card.convert("RGB"), np.float32)[top:bottom, left:right]
        assert relight.detail_kept(shown, seller, inside) >= relight.MIN_DETAIL - 0.05  # JPEG's loss
        assert relight.hue_shift_deg(shown, seller, inside) <= relight.MAX_HUE_SHIFT_DEG

    return check


def system_chromium() -> str:
    """The system Chromium (apt-get installs it when the tests run as root); else the test is skipped."""
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=600)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium, as root)")
    return found


@pytest.fixture
def chromium():
    """The system Chromium, driven through Playwright (nothing downloads a browser)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    path = system_chromium()
    with sync_api.sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = playwright.chromium.launch(executable_path=path, args=args)
        yield browser
        browser.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With pytest-xdist (``make test`` runs ``-n 2 --dist loadfile``): the files holding end-to-end tests
    go out first, so the longest ones never start last on one worker while the other has nothing left."""
    if "PYTEST_XDIST_WORKER" not in os.environ:  # the workers collect, and their order is the one used
        return
    slow = {item.path for item in items if item.get_closest_marker("slow")}

    def first(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        return (LONGEST.index(name) if name in LONGEST else len(LONGEST), item.path not in slow)

    items.sort(key=first)  # stable: the order within each file is kept


# The files that take longest (measured, ``--durations``), longest first: a hint for the order above only.
LONGEST = ["test_demo.py", "test_pool_demo.py", "test_batches.py", "test_serve.py", "test_bench.py"]
