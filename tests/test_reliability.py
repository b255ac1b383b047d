"""Hostile input and injected faults: each defect the hostile run found (issue 10, numbered as there), and the
cases it had not tried. Faults are real: a server stopped and restarted, or botocore's own event hooks
failing a call the way a dropped connection does. docs/reliability.md lists every case and its test."""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid

import numpy as np
import pytest
from botocore.exceptions import EndpointConnectionError
from PIL import Image

from product_studio import cleaning, ingest, publish
from product_studio.devkit.local_s3 import LocalS3
from product_studio.devkit.samples import SAMPLE_PRODUCTS, product_photo
from product_studio.manifest import Manifest
from product_studio.records import PhotoProblem, PhotoRecord, SkuOutcome
from product_studio.review import pages
from product_studio.settings import Settings
from product_studio.storage import AccessDenied, ObjectTooLarge, StorageError, Store, is_transient
from product_studio.training import priors


def _jpeg(product="vase-ochre", size=300, angle=0) -> bytes:
    buf = io.BytesIO()
    product_photo(SAMPLE_PRODUCTS[product][2], angle, size).save(buf, format="JPEG")
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _fail_call(store: Store, operation: str, *, after: int = 0) -> list[str]:
    """From the ``after+1``-th ``operation`` on, the call fails as a dropped connection does (until
    ``_heal``)."""
    calls: list[str] = []

    def fail(params, **_):
        calls.append(params.get("Key", ""))
        if len(calls) > after:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/internal")

    store.client.meta.events.register(f"provide-client-params.s3.{operation}", fail, unique_id="fault")
    return calls


def _heal(store: Store, operation: str) -> None:
    store.client.meta.events.unregister(f"provide-client-params.s3.{operation}", unique_id="fault")


# --- 1, 2: ids ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["/tmp/x", "../x", "a/b", "nl-sku\n", "", ".hidden", "x" * 65])
def test_ids_are_checked_at_every_entry(bad, buckets, tmp_path, monkeypatch):
    from flows.catalogue import catalogue_flow
    from flows.cli import main
    from flows.sku import sku_flow

    incoming, _ = buckets
    with pytest.raises(ingest.IngestError, match="is not a valid id"):
        ingest.check_id("catalogue", bad)
    with pytest.raises(ingest.IngestError, match="is not a valid id"):
        ingest.load_product_spec(incoming, bad, "sku1")
    with pytest.raises(ingest.IngestError, match="is not a valid id"):
        ingest.load_sku_photos(incoming, bad, "sku1", tmp_path)
    with pytest.raises(ValueError, match="is not a valid id"):
        Settings().run_work_dir(bad, "sku1", "r1")
    # The flows refuse before reading or writing anything (no Prefect run needed to see it)...
    monkeypatch.setenv("PRODUCT_STUDIO_CLEANER", "grabcut")
    with pytest.raises(ingest.IngestError, match="is not a valid id"):
        sku_flow.fn(bad, "sku1")
    with pytest.raises(ingest.IngestError, match="is not a valid id"):
        sku_flow.fn("cat1", bad)
    with pytest.raises(ingest.IngestError, match="is not a valid id"):
        catalogue_flow.fn(bad)
    # ...and so does the command line, before starting Prefect.
    with pytest.raises(SystemExit) as exit_:
        main(["sku", bad, "teapot1"])
    assert exit_.value.code == 2


def test_a_run_folder_is_always_inside_the_work_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PRODUCT_STUDIO_WORK_DIR", str(tmp_path / "work"))
    settings = Settings()
    a = settings.run_work_dir("cat", "Mug-1", "r1")
    assert (tmp_path / "work").resolve() in a.parents
    # SKU ids that differ only in case, or two runs of one SKU, never share a folder.
    assert (
        len({a, settings.run_work_dir("cat", "mug-1", "r1"), settings.run_work_dir("cat", "Mug-1", "r2")})
        == 3
    )
    with pytest.raises(ValueError, match="run id '../../etc' is not valid"):
        settings.run_work_dir("cat", "mug-1", "../../etc")


def test_a_trailing_newline_is_not_an_id(buckets):
    from product_studio.reruns.catalogue_changes import due_catalogues

    incoming, output = buckets
    incoming.write("nlcat\n/catalogue.json", b"{}")
    incoming.write("goodcat/catalogue.json", b"{}")
    assert list(due_catalogues(incoming, output)) == ["goodcat"]  # what the scheduled scan would run
    with pytest.raises(ingest.IngestError):
        ingest.check_id("SKU", "nl-sku\n")


# --- 3, 4, 5, 15: photos ------------------------------------------------------------------------------


def test_photos_whose_names_collide_keep_their_own_files_and_cutouts(buckets, tmp_path):
    incoming, _ = buckets
    uploads = {
        "dup.jpg": _jpeg("vase-ochre", angle=0),
        "dup.png": _png(Image.open(io.BytesIO(_jpeg("teapot-teal", angle=1)))),
        "sub/x.jpg": _jpeg("backpack-red", angle=2),
        "sub__x.jpg": _jpeg("vase-ochre", angle=3),
        ("n" * 200) + ".jpg": _jpeg("teapot-teal", angle=0),  # a long key never makes a long local name
    }
    for name, data in uploads.items():
        incoming.write(f"c/s/photos/{name}", data)
    photos, problems = ingest.load_sku_photos(incoming, "c", "s", tmp_path / "photos")
    assert not problems and len(photos) == 5
    assert len({p.local_path for p in photos}) == 5
    for photo in photos:  # each record describes the bytes of its own photo
        assert photo.sha256 == hashlib.sha256(uploads[photo.file]).hexdigest()
        assert photo.local_path.read_bytes() == uploads[photo.file] and len(photo.local_path.name) < 80
    cutouts, problems = cleaning.clean_photos(photos, cleaning.make_cleaner("grabcut"), tmp_path / "cutouts")
    assert len({c.cutout_path for c in cutouts}) == len(cutouts) == 5 - len(problems)
    assert {c.source for c in cutouts} <= set(uploads)


def test_a_strip_of_a_photo_is_refused_and_any_cleaning_failure_stays_with_its_photo(buckets, tmp_path):
    incoming, _ = buckets
    strip = Image.new("RGB", (256, 100_000), (200, 200, 200))
    for i in range(3):
        incoming.write(f"c/s/photos/{i}.jpg", _jpeg(angle=i))
    incoming.write("c/s/photos/strip.png", _png(strip))
    photos, problems = ingest.load_sku_photos(incoming, "c", "s", tmp_path / "photos")
    assert len(photos) == 3 and "256x100000 px is a strip" in problems[0].reason
    # Past the check too (a cleaner that crashes on one photo): that photo is a problem, the rest go on.
    strip_path = tmp_path / "strip.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (6400, 64, 3), np.uint8)).save(strip_path)
    record = PhotoRecord(
        file="strip.png",
        sha256="0" * 64,
        bytes=1,
        format="PNG",
        width=256,
        height=100_000,
        local_path=strip_path,
    )

    class Crashing:
        name = "crashing"

        def mask(self, image):
            raise np.linalg.LinAlgError("OpenCV-style assertion")

    cutouts, problems = cleaning.clean_photos([record], Crashing(), tmp_path / "out")
    assert not cutouts and problems[0].file == "strip.png" and "LinAlgError" in problems[0].reason


def test_a_16_bit_photo_is_scaled_not_clipped_to_white(tmp_path):
    grey = np.full((320, 320), 52_000, np.uint16)  # a light backdrop...
    yy, xx = np.mgrid[:320, :320]
    grey[(yy - 170) ** 2 + (xx - 160) ** 2 < 90**2] = 9_000  # ...and a dark round product, in 16 bits
    path = tmp_path / "deep.png"
    Image.fromarray(grey).save(path)  # as a scanner or a RAW export writes them
    assert Image.open(path).mode.startswith("I")
    cleaned = cleaning.clean_photo(path, cleaning.make_cleaner("grabcut"), tmp_path / "out")
    assert 0.02 < cleaned.coverage < 0.95


def test_a_file_that_is_not_an_image_is_described_not_dumped(buckets, tmp_path):
    incoming, _ = buckets
    incoming.write("c/s/photos/a.jpg", b"<html><body>Sign in</body></html>")
    incoming.write("c/s/photos/b.png", b"%PDF-1.7 ...")
    _, problems = ingest.load_sku_photos(incoming, "c", "s", tmp_path)
    reasons = {p.file: p.reason for p in problems}
    assert reasons["a.jpg"] == "a.jpg: not a JPEG, PNG or WebP image: starts with `<html><body>`"
    assert reasons["b.png"] == "b.png: not a JPEG, PNG or WebP image: a PDF document"
    assert not any("BytesIO" in r or "0x" in r for r in reasons.values())


def test_bombs_are_refused_while_cmyk_animated_and_exif_photos_are_used(buckets, tmp_path):
    incoming, _ = buckets
    photo = product_photo(SAMPLE_PRODUCTS["vase-ochre"][2], 0, 320)
    cmyk, animated = io.BytesIO(), io.BytesIO()
    photo.convert("CMYK").save(cmyk, format="JPEG")
    photo.save(animated, format="WEBP", save_all=True, append_images=[photo.rotate(90)], duration=100)
    bomb = Image.new("1", (20_000, 20_000))  # 400 Mpx of nothing: a few KB as a PNG
    incoming.write("c/s/photos/cmyk.jpg", cmyk.getvalue())
    incoming.write("c/s/photos/animated.webp", animated.getvalue())
    incoming.write("c/s/photos/bomb.png", _png(bomb))
    photos, problems = ingest.load_sku_photos(incoming, "c", "s", tmp_path / "photos")
    assert [p.file for p in problems] == ["bomb.png"] and "too large to process safely" in problems[0].reason
    cutouts, problems = cleaning.clean_photos(photos, cleaning.make_cleaner("grabcut"), tmp_path / "cutouts")
    assert sorted(c.source for c in cutouts) == ["animated.webp", "cmyk.jpg"] and not problems


# --- 6, 7, 8: storage failures ---------------------------------------------------------------------------


def test_bad_input_and_auth_failures_are_not_retried(buckets, s3_env):
    incoming, _ = buckets
    incoming.write("c/s/product.json", b'{"class_noun": "mug", "title": "' + b"x" * 150_000 + b'"}')
    with pytest.raises(ingest.IngestError, match=r"product.json is over 100,000 bytes") as caught:
        ingest.load_product_spec(incoming, "c", "s")
    assert not is_transient(caught.value)
    import boto3

    wrong = boto3.client(
        "s3",
        endpoint_url=s3_env.endpoint,
        aws_access_key_id="nobody",
        aws_secret_access_key="wrong",
        region_name="us-east-1",
    )
    with pytest.raises(AccessDenied, match="check the credentials") as caught:
        Store(incoming.location, client=wrong).read("c/s/product.json")
    assert not is_transient(caught.value) and s3_env.endpoint not in str(caught.value)


def test_an_outage_during_download_is_retried_never_blamed_on_the_photos(buckets, tmp_path):
    incoming, _ = buckets
    for i in range(3):
        incoming.write(f"c/s/photos/{i}.jpg", _jpeg(angle=i))
    _fail_call(incoming, "GetObject", after=1)
    with pytest.raises(StorageError) as caught:
        ingest.load_sku_photos(incoming, "c", "s", tmp_path)
    assert is_transient(caught.value)
    # What the seller would read in error.json names neither the endpoint nor a photo as the culprit.
    outcome = SkuOutcome.failed("c", "s", caught.value)
    assert "127.0.0.1" not in outcome.model_dump_json() and not outcome.problems


def test_throttling_is_retried_by_botocore_then_reported_as_transient(buckets):
    from botocore.awsrequest import AWSResponse

    incoming, _ = buckets
    incoming.write("k.jpg", b"photo")
    sent: list[int] = []

    def slow_down(request, **_):  # the store answers 503 SlowDown, as S3 does under load
        sent.append(1)
        if len(sent) <= failures:
            body = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate</Message></Error>"
            return AWSResponse(request.url, 503, {}, type("Raw", (), {"stream": lambda *a, **k: [body]})())
        return None

    incoming.client.meta.events.register("before-send.s3.GetObject", slow_down)
    failures = 2  # a short burst: botocore's standard retry mode (our client's) rides it out
    assert incoming.read("k.jpg") == b"photo" and len(sent) == 3
    # A long one: every attempt refused, then a transient error for Prefect to retry later (one attempt
    # here, so the test does not sit through botocore's back-off).
    import boto3
    from botocore.config import Config

    once = boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 1}))
    once.meta.events.register("before-send.s3.GetObject", slow_down)
    sent.clear()
    failures = 99
    with pytest.raises(StorageError, match="SlowDown") as caught:
        Store(incoming.location, client=once).read("k.jpg")
    assert is_transient(caught.value)


def test_the_size_limit_bounds_the_read_itself(buckets):
    incoming, _ = buckets
    incoming.write("big.jpg", b"x" * 5_000_000)
    with pytest.raises(ObjectTooLarge, match="over the 100000-byte limit"):
        incoming.read("big.jpg", max_bytes=100_000)

    # An object swapped for a larger one after it was listed: the store still says 10 bytes.
    def small_on_paper(parsed, **_):
        parsed["ContentLength"] = 10

    incoming.client.meta.events.register("after-call.s3.GetObject", small_on_paper)
    with pytest.raises(ObjectTooLarge):
        incoming.read("big.jpg", max_bytes=100_000)


@pytest.mark.slow
def test_a_server_stopped_mid_download_and_restarted_loses_nothing(tmp_path_factory, tmp_path, monkeypatch):
    server = LocalS3(tmp_path_factory.mktemp("s3-restart")).start()
    try:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        incoming = Store(f"s3://in-{uuid.uuid4().hex[:8]}")
        incoming.ensure_bucket()
        for i in range(3):
            incoming.write(f"c/s/photos/{i}.jpg", _jpeg(angle=i))
        gets: list[str] = []

        def stop_after_first(parsed, **_):
            gets.append("get")
            if len(gets) == 1:
                server.stop()

        incoming.client.meta.events.register("after-call.s3.GetObject", stop_after_first)
        with pytest.raises(StorageError) as caught:
            ingest.load_sku_photos(incoming, "c", "s", tmp_path / "a")
        assert is_transient(caught.value) and server.endpoint not in str(caught.value)
        server.restart()
        # The task's retries, a few seconds apart as Prefect spaces them: the restarted store may answer
        # 500 for a moment while its volume server comes back.
        for attempt in range(10):
            try:
                photos, problems = ingest.load_sku_photos(incoming, "c", "s", tmp_path / f"b{attempt}")
                break
            except StorageError as exc:
                assert is_transient(exc)
                time.sleep(1.5)
        assert len(photos) == 3 and not problems
    finally:
        server.stop()


# --- 9: publishing never leaves a lying manifest ---------------------------------------------------------


def _run(make_manifest, tmp_path, run: str, cards: dict[str, bytes]) -> tuple[Manifest, dict]:
    files = {}
    for name, data in cards.items():
        path = tmp_path / run / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[f"runs/{run}/cards/{name}"] = path
    return make_manifest("sku1", run), files


def _assert_manifest_tells_the_truth(output: Store) -> dict:
    manifest = json.loads(output.read("cat/sku1/manifest.json"))
    for key, sha in manifest["files"].items():
        assert hashlib.sha256(output.read(f"cat/sku1/{key}")).hexdigest() == sha, key
    return manifest


def test_a_failed_republish_leaves_the_previous_run_whole_and_dropped_cards_go(
    buckets, tmp_path, make_manifest
):
    _, output = buckets
    publish.publish_sku(
        output, *_run(make_manifest, tmp_path, "r1", {"a.jpg": b"a1", "b.jpg": b"b1", "c.jpg": b"c1"})
    )
    # Run 2 changed every card; storage dies after its first upload.
    calls = _fail_call(output, "PutObject", after=1)
    with pytest.raises(StorageError):
        publish.publish_sku(
            output, *_run(make_manifest, tmp_path, "r2", {"a.jpg": b"a2", "b.jpg": b"b2", "c.jpg": b"c2"})
        )
    _heal(output, "PutObject")
    assert len(calls) == 2
    assert _assert_manifest_tells_the_truth(output)["run"] == "r1"
    # Run 3 drops card c: run 2's debris goes at once (it never went live: no link shows it); run 1, live
    # until now, keeps its files while a review link made for it may still be open (issue 35).
    r1 = sorted(output.list("cat/sku1/runs/r1/"))
    publish.publish_sku(output, *_run(make_manifest, tmp_path, "r3", {"a.jpg": b"a3", "b.jpg": b"b3"}))
    manifest = _assert_manifest_tells_the_truth(output)
    assert manifest["run"] == "r3"
    r3 = [
        "cat/sku1/runs/r3/cards/a.jpg",
        "cat/sku1/runs/r3/cards/b.jpg",
        "cat/sku1/runs/r3/review/index.html",
    ]
    assert sorted(output.list("cat/sku1/runs/")) == sorted([*r1, "cat/sku1/runs/r1/superseded.json", *r3])
    # Once no link can show it any more, the next publish removes it (the dropped card c among its files).
    assert sorted(publish.remove_other_runs(output, make_manifest("sku1", "r3"), keep_seconds=0)) == sorted(
        [*r1, "cat/sku1/runs/r1/superseded.json"]
    )
    assert sorted(output.list("cat/sku1/runs/")) == r3


def test_a_slower_run_never_removes_the_files_of_a_later_one(buckets, tmp_path, make_manifest):
    _, output = buckets
    earlier = _run(make_manifest, tmp_path, "r1", {"a.jpg": b"a1"})
    later = _run(make_manifest, tmp_path, "r2", {"a.jpg": b"a2"})
    publish.publish_sku(output, *later)  # r2 switched the manifest first...
    # ...then r1, started earlier, finishes: it publishes its files but must not delete r2's.
    manifest, files = earlier
    for key, path in files.items():
        output.write(f"cat/sku1/{key}", path.read_bytes())
    assert publish.remove_other_runs(output, manifest) == []
    assert _assert_manifest_tells_the_truth(output)["run"] == "r2"


def test_error_json_always_describes_the_latest_run(buckets):
    _, output = buckets
    publish.publish_failure(output, SkuOutcome.failed("cat", "sku1", "an earlier failure"))
    publish.begin_run(output, "cat", "sku1")  # a new run starts: the old report no longer holds
    assert not output.exists("cat/sku1/error.json")
    publish.publish_failure(output, SkuOutcome.failed("cat", "sku1", "the latest failure"))
    assert json.loads(output.read("cat/sku1/error.json"))["error"] == "the latest failure"


# --- 10, 14: hostile product.json --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"class_noun": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
        (b'{"class_noun": "mug", "title": ' + b"9" * 5000 + b"}", "a number has 5000 digits"),
        (
            b'{"class_noun": "mug", "class_noun": "teapot"}',
            r"key\(s\) \['class_noun'\] appear more than once",
        ),
        (b'{"class_noun": "mug", "title": NaN}', "NaN is not a valid JSON number"),
        (
            b'{"class_noun": "mug", "scenes": ["oak-table", "oak-table"]}',
            r"\['oak-table'\] listed more than once",
        ),
        (b'{"class_noun": "mug", "marketplaces": ["main-white", "main-white"]}', "listed more than once"),
        (b'{"class_noun": "mug", "scenes": [' + b'"a",' * 999 + b'"a"]}', "at most 24 items"),
    ],
)
def test_hostile_product_json_is_refused_by_name(buckets, body, message):
    incoming, _ = buckets
    incoming.write("c/s1/product.json", body)
    with pytest.raises(ingest.IngestError, match=message) as caught:
        ingest.load_product_spec(incoming, "c", "s1")
    assert "SKU 's1'" in str(caught.value) and "product.json" in str(caught.value)


# --- 11: the review page ----------------------------------------------------------------------------------


def test_a_photo_refused_by_background_removal_is_only_listed_as_not_used(make_manifest):
    photo = PhotoRecord(file="side.jpg", sha256="0" * 64, bytes=1, format="JPEG", width=300, height=300)
    problem = PhotoProblem(file="side.jpg", reason="side.jpg: the photo is blank")
    inputs = type(make_manifest("sku1").inputs)(photos=[photo], problems=[problem])
    html = pages.render_review_page(make_manifest("sku1").model_copy(update={"inputs": inputs}))
    assert 'side.jpg<br><span class="check">Not used: the photo is blank' in html
    assert 'side.jpg<br><span class="good">Used' not in html


# --- 12, 13: configuration ------------------------------------------------------------------------------


def test_a_broken_worker_stops_a_catalogue_before_any_sku(buckets, tmp_path, monkeypatch):
    from flows.catalogue import catalogue_flow

    incoming, output = buckets
    monkeypatch.setenv("PRODUCT_STUDIO_INCOMING", incoming.url())
    monkeypatch.setenv("PRODUCT_STUDIO_OUTPUT", output.url())
    incoming.write("cat1/catalogue.json", b"{}")
    incoming.write("cat1/sku1/product.json", b'{"class_noun": "mug"}')
    monkeypatch.setenv("PRODUCT_STUDIO_CLEANER", "bogus")
    with pytest.raises(ValueError, match="cleaner 'bogus' is not one of"):
        catalogue_flow.fn("cat1")
    # A cleaner that parses but cannot be built (a model outside REMBG_HOME) fails the same way.
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not onnx")
    monkeypatch.setenv("REMBG_HOME", str(tmp_path / "rembg-home"))
    monkeypatch.setenv("PRODUCT_STUDIO_CLEANER", f"rembg-onnx:{model}")
    with pytest.raises(ValueError, match="only loads custom models from inside REMBG_HOME"):
        catalogue_flow.fn("cat1")
    # A corrupt custom ONNX model where it belongs: onnxruntime's error, named as the cleaner setting's.
    home = tmp_path / "rembg-home"
    home.mkdir()
    (home / "model.onnx").write_bytes(b"not onnx")
    monkeypatch.setenv("PRODUCT_STUDIO_CLEANER", f"rembg-onnx:{home / 'model.onnx'}")
    with pytest.raises(ValueError, match="PRODUCT_STUDIO_CLEANER=.*: the model could not be loaded"):
        catalogue_flow.fn("cat1")
    assert output.list() == []  # no error.json for sellers, no report marking the catalogue done


def test_an_encoder_that_cannot_load_stops_the_catalogue_before_anything_is_written(
    prefect_server, buckets, tiny_model, tiny_encoders, tmp_path, monkeypatch
):
    """Issue 20 #1: preflight loads every model, so a DINO folder without weights fails the catalogue once,
    before any SKU ingests, cleans, generates class images or trains."""
    import shutil

    from flows.catalogue import catalogue_flow
    from product_studio.devkit.samples import upload_sample_catalogue

    incoming, output = buckets
    broken = tmp_path / "dino-no-weights"
    shutil.copytree(tiny_encoders[0], broken, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    env = {
        "PRODUCT_STUDIO_INCOMING": incoming.url(),
        "PRODUCT_STUDIO_OUTPUT": output.url(),
        "PRODUCT_STUDIO_BASE_MODEL": str(tiny_model),
        "PRODUCT_STUDIO_DEVICE": "cpu",
        "PRODUCT_STUDIO_CLEANER": "grabcut",
        "PRODUCT_STUDIO_WORK_DIR": str(tmp_path / "work"),
        "PRODUCT_STUDIO_TRAIN__STEPS": "2",
        "PRODUCT_STUDIO_TRAIN__PRIOR_IMAGES": "1",
        "PRODUCT_STUDIO_RENDER__PRIOR_STEPS": "1",
        "PRODUCT_STUDIO_SCORES__DINO_MODEL": str(broken),
        "PRODUCT_STUDIO_SCORES__CLIP_MODEL": str(tiny_encoders[1]),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    upload_sample_catalogue(incoming, "cat1", photos=3, size=256, with_corrupt_photo=False)
    expected = rf"PRODUCT_STUDIO_SCORES__DINO_MODEL={broken}: the model could not be loaded .*DINO encoder"
    state = catalogue_flow("cat1", return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match=expected):
        state.result()
    assert output.list() == []  # no LoRA, checkpoint, class image, error.json or report
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("*.png"))


# --- not tried by the hostile run -----------------------------------------------------------------------


def test_thousands_of_photos_use_the_first_ones_without_downloading_the_rest(buckets, tmp_path):
    incoming, _ = buckets
    photo = _jpeg()
    for i in range(40):
        incoming.write(f"c/s/photos/{i:04d}.jpg", photo)
    gets: list[str] = []
    incoming.client.meta.events.register(
        "provide-client-params.s3.GetObject", lambda params, **_: gets.append(params["Key"])
    )
    photos, problems = ingest.load_sku_photos(incoming, "c", "s", tmp_path, max_photos=5)
    assert len(photos) == 5 and len(gets) == 5 and len(problems) == 35
    assert problems[0].reason == "0005.jpg: not used; an SKU uses its first 5 photos"


def test_a_kill_while_writing_class_images_completes_the_set_on_the_retry(buckets, tiny_pipe, tmp_path):
    _, output = buckets
    spec = priors.prior_spec(tiny_pipe, {"id": "tiny"}, "a photo of a mug", resolution=64, steps=2)
    _fail_call(output, "PutObject", after=2)  # spec.json and one image land, then the store is gone
    with pytest.raises(StorageError):
        priors.ensure_class_images(output, tiny_pipe, spec, 3, tmp_path / "a")
    _heal(output, "PutObject")
    paths = priors.ensure_class_images(output, tiny_pipe, spec, 3, tmp_path / "b")
    assert [p.name for p in paths] == ["00000.png", "00001.png", "00002.png"]
    assert json.loads(output.read(f"_priors/{priors.prior_key(spec)}/spec.json")) == spec


# --- issue 20 #5: composites use clean cutouts only ------------------------------------------------------


def _mug_photo(dx: int = 0, scale: float = 1.0, hand: bool = False) -> Image.Image:
    """A light mug on a dark plain background; ``hand``: a skin-coloured arm entering from the bottom edge,
    its hand on the mug (a bright-object cleaner keeps both, as real ones keep a holding hand)."""
    from PIL import ImageDraw

    image = Image.new("RGB", (320, 320), (15, 15, 22))
    draw = ImageDraw.Draw(image)
    s = lambda v: round(160 + (v - 160) * scale)  # noqa: E731 (scale about the centre)
    draw.rounded_rectangle((s(110) + dx, s(90), s(200) + dx, s(220)), radius=12, fill=(225, 225, 235))
    draw.ellipse((s(185) + dx, s(120), s(235) + dx, s(190)), outline=(225, 225, 235), width=12)
    if hand:
        draw.rectangle((140 + dx, 190, 180 + dx, 320), fill=(226, 176, 142))
        draw.ellipse((125 + dx, 170, 195 + dx, 225), fill=(226, 176, 142))
    return image


def test_a_photo_held_in_a_hand_trains_but_is_not_pasted_into_composites(tmp_path, monkeypatch):
    import onnx
    from onnx import TensorProto, helper

    from product_studio import cutout_checks
    from product_studio.cards import making, planning
    from product_studio.cards.formats import select_formats
    from product_studio.identifiers import ProductPrompts
    from product_studio.manifest import build_manifest
    from product_studio.records import TrainResult
    from product_studio.rendering.scenes import SceneTemplate

    home = tmp_path / "rembg-home"
    home.mkdir()
    monkeypatch.setenv("REMBG_HOME", str(home))
    graph = helper.make_graph(  # saliency = brightness: keeps everything lighter than the background
        [helper.make_node("ReduceMean", ["input"], ["mask"], axes=[1], keepdims=1)],
        "brightness",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 320, 320])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), home / "bright.onnx")
    cleaner = cleaning.make_cleaner(f"rembg-onnx:{home / 'bright.onnx'}")
    shots = {
        "00-held.jpg": _mug_photo(hand=True),
        "01.jpg": _mug_photo(dx=-12),
        "02.jpg": _mug_photo(dx=10, scale=0.9),
        "03.jpg": _mug_photo(scale=1.1),
    }
    photos = []
    for name, image in shots.items():
        image.save(tmp_path / name)
        fields = {"sha256": "0" * 64, "bytes": 1, "format": "JPEG", "width": 320, "height": 320}
        photos.append(PhotoRecord(file=name, local_path=tmp_path / name, **fields))
    cutouts, problems = cleaning.clean_photos(photos, cleaner, tmp_path / "cutouts")
    assert problems == [] and [c.source for c in cutouts] == list(shots)  # every photo is trained on
    unfit = {c.source: c.not_for_composites for c in cutouts if c.not_for_composites}
    assert list(unfit) == ["00-held.jpg"] and "bottom edge" in unfit["00-held.jpg"]

    # The main image and composites use the clean cutout, not the seller's first photo.
    plan = planning.CardPlan(formats=select_formats(["main-white"]), templates=[])
    made = making.make_cards(plan, cutouts, tmp_path / "cards")
    assert made[0].product.cutout == "cutouts/01.png"
    composite = SceneTemplate(id="oak", title="Oak", prompt="a photo of {product} on an oak table")
    kept = planning.plan_for_cutouts(plan.model_copy(update={"templates": [composite]}), cutouts)
    assert [t.mode for t in kept.templates] == ["composite"]
    none_clean = [c.model_copy(update={"not_for_composites": "kept a hand"}) for c in cutouts]
    assert cutout_checks.cleanest(none_clean) is None
    switched = planning.plan_for_cutouts(plan.model_copy(update={"templates": [composite]}), none_clean)
    assert [t.mode for t in switched.templates] == ["generate"]

    # The manifest records why, and the seller's page says so; with none clean, the notes say scenes are
    # generated.
    (tmp_path / "lora.safetensors").write_bytes(b"x")
    trained = TrainResult(
        lora_file=tmp_path / "lora.safetensors", steps=1, resolution=64, rank=4, alpha=4, losses=[0.1]
    )
    manifest, _ = build_manifest(
        catalogue_id="cat", sku="mug-1", run="r1", spec=ingest.ProductSpec(class_noun="mug", title="Mug"),
        **_ran_under(Settings()), prompts=ProductPrompts("olis", "mug"), photos=photos, problems=[],
        cutouts=cutouts, trained=trained, cards=made, timings={},
    )  # fmt: skip
    held = next(c for c in manifest.cutouts if c.source == "00-held.jpg")
    assert "bottom edge" in held.not_for_composites and manifest.notes == []
    html = pages.render_review_page(manifest)
    held = '00-held.jpg<br><span class="check">Used to learn your product, not shown in scenes: the cutout'
    assert held + " touches the photo&#39;s bottom edge" in html
    assert '01.jpg<br><span class="good">Used</span>' in html
    alone, _ = build_manifest(
        catalogue_id="cat", sku="mug-1", run="r1", spec=ingest.ProductSpec(class_noun="mug", title="Mug"),
        **_ran_under(Settings()), prompts=ProductPrompts("olis", "mug"), photos=photos, problems=[],
        cutouts=none_clean, trained=trained, cards=made, timings={},
    )  # fmt: skip
    assert any("every scene card was drawn from what we learned" in note for note in alone.notes)


def _ran_under(settings) -> dict:
    return {"base_model": settings.base_model, "cleaner": settings.cleaner, "train": settings.train,
            "scores": settings.scores}  # fmt: skip
