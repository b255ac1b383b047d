"""Batch runs (issue 23): SKUs taken one at a time under their leases, models loaded once per worker, the
shared pipeline left exactly as it was, and a batch run killed mid-SKU losing only that SKU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from product_studio import leases
from product_studio.identifiers import ProductPrompts
from product_studio.layout import batch_done, sku_key
from product_studio.records import SkuOutcome
from product_studio.reruns import batches

ROOT = Path(__file__).resolve().parents[1]
SKUS = ["a-1", "b-2", "c-3"]


def _done(output, run: str, taken: batches.Taken, worker: str) -> None:
    outcome = SkuOutcome.published("cat", taken.sku, worker=worker)
    batches.finish(output, "cat", run, taken, outcome)


def test_two_batch_runs_take_each_sku_once_and_a_finished_sku_is_never_taken_again(buckets):
    _, output = buckets
    run = uuid.uuid4().hex[:8]
    first = batches.take_all(output, "cat", run, SKUS, "w1", 600)
    second = batches.take_all(output, "cat", run, SKUS, "w2", 600)
    a, b = next(first), next(second)  # both reach for a-1 first: the lease gives it to one
    assert (a.sku, b.sku) == ("a-1", "b-2")
    assert leases.read_lease(output, sku_key("cat", "a-1", "lease.json"))["owner"] == "w1"
    _done(output, run, a, "w1")
    assert not output.exists(sku_key("cat", "a-1", "lease.json"))  # released after its marker
    c = next(first)
    assert c.sku == "c-3"  # a-1 is finished, b-2 is held
    _done(output, run, b, "w2")
    _done(output, run, c, "w1")
    assert list(first) == [] and list(second) == []  # nothing left
    assert {s: batches.finished(output, "cat", run, s).worker for s in SKUS} == {
        "a-1": "w1",
        "b-2": "w2",
        "c-3": "w1",
    }
    # Another catalogue run starts afresh; clearing removes only this run's markers.
    assert next(batches.take_all(output, "cat", "other-run", SKUS, "w3", 600)).sku == "a-1"
    batches.clear(output, "cat", run)
    assert batches.finished(output, "cat", run, "a-1") is None


def test_a_batch_run_waits_for_a_crashed_runs_sku_and_takes_it_when_its_lease_expires(buckets):
    _, output = buckets
    run = uuid.uuid4().hex[:8]
    # A batch run that died holding b-2: its lease (2 s, never renewed) and no marker.
    crashed = leases.try_acquire(output, sku_key("cat", "b-2", "lease.json"), "dead", 2)
    assert isinstance(crashed, leases.Lease)
    taken = []
    for got in batches.take_all(output, "cat", run, SKUS, "alive", 600, wait=30, poll=0.2):
        taken.append((got.sku, round(time.monotonic())))
        _done(output, run, got, "alive")
    assert [s for s, _ in taken] == ["a-1", "c-3", "b-2"]
    assert batches.finished(output, "cat", run, "b-2").worker == "alive"
    # Without waiting, a batch run leaves a held SKU to the catalogue's next run.
    other = uuid.uuid4().hex[:8]
    leases.try_acquire(output, sku_key("cat", "c-3", "lease.json"), "busy", 600)
    took = [g.sku for g in batches.take_all(output, "cat", other, ["c-3"], "alive", 600)]
    assert took == [] and batches.finished(output, "cat", other, "c-3") is None


def test_a_batch_lease_is_handed_to_the_sku_run_by_its_token_only(buckets):
    _, output = buckets
    key = sku_key("cat", "a-1", "lease.json")
    lease = leases.try_acquire(output, key, "w1", 600)
    adopted = leases.sku_lease(output, "cat", "a-1", "w1", 600, 0, token=lease.token)
    assert isinstance(adopted, leases.Lease) and adopted.tag == lease.tag
    adopted.renew()  # the SKU run renews it between its stages
    refused = leases.sku_lease(output, "cat", "a-1", "w2", 600, 0, token="not-the-token")
    assert not isinstance(refused, leases.Lease) and refused["owner"] == "w1"


@pytest.mark.parametrize(
    ("setting", "pool", "skus", "expected"),
    [(0, 3, 10, 3), (0, None, 10, batches.DEFAULT_BATCH_RUNS), (2, 8, 10, 2), (0, 8, 3, 3), (5, 0, 0, 1)],
)
def test_how_many_batch_runs_a_catalogue_starts(setting, pool, skus, expected):
    assert batches.batch_count(setting, pool, skus) == expected


def test_the_models_load_once_per_process_and_the_first_load_is_reported_once(
    tiny_model, tiny_encoders, tmp_path
):
    import shutil

    from product_studio.loaded_models import ModelRefs, load_run_models, take_load_seconds

    model = shutil.copytree(tiny_model, tmp_path / "tiny-sd")  # a model no other test has loaded here
    refs = ModelRefs(
        base_model=str(model),
        cleaner="grabcut",
        dino_model=str(tiny_encoders[0]),
        clip_model=str(tiny_encoders[1]),
    )
    take_load_seconds()
    first = load_run_models(refs)
    loaded = take_load_seconds()
    second = load_run_models(refs)
    assert take_load_seconds() == 0.0  # the next SKU of this worker: nothing loaded, nothing reported
    assert second.pipe is first.pipe and second.cleaner is first.cleaner
    assert second.scorer.dino is first.scorer.dino and second.scorer.clip is first.scorer.clip
    assert loaded > 0.0


def _render(pipe) -> np.ndarray:
    generator = torch.Generator().manual_seed(7)
    image = pipe("a photo of a teapot", num_inference_steps=2, generator=generator).images[0]
    return np.asarray(image, dtype=np.int16)


def test_other_skus_loras_leave_the_shared_pipeline_exactly_as_it_was(tiny_pipe, tmp_path):
    from PIL import Image

    from product_studio.rendering.renderer import product_lora
    from product_studio.training.config import TrainConfig
    from product_studio.training.loop import train_lora

    before = _render(tiny_pipe)
    config = TrainConfig(
        steps=3, rank=4, prior_images=0, validation_prompts=[], checkpoint_every=0, learning_rate=5e-2
    )
    photo = Image.new("RGB", (64, 64), (200, 40, 40))
    lora = train_lora(  # another SKU's training on the shared pipeline
        tiny_pipe, [photo] * 3, [], prompts=ProductPrompts("olis", "teapot"), config=config,
        out_dir=tmp_path / "lora",
    ).lora_file  # fmt: skip
    np.testing.assert_array_equal(_render(tiny_pipe), before)
    with product_lora(tiny_pipe, lora):  # and its cards
        assert np.abs(_render(tiny_pipe) - before).mean() > 0.5  # the LoRA does change the pixels
    with product_lora(tiny_pipe, lora):  # loaded twice on one worker: no adapter left over
        pass
    np.testing.assert_array_equal(_render(tiny_pipe), before)  # the next SKU renders on the same weights
    assert not getattr(tiny_pipe.unet, "peft_config", None)


# --- a real batch run killed mid-SKU -----------------------------------------------------------------------


@pytest.fixture
def catalogue(prefect_server, buckets, tiny_model, tiny_encoders, tmp_path, monkeypatch):
    from product_studio.devkit.samples import upload_sample_catalogue

    incoming, output = buckets
    env = {
        "PRODUCT_STUDIO_INCOMING": f"s3://{incoming.location.bucket}",
        "PRODUCT_STUDIO_OUTPUT": f"s3://{output.location.bucket}",
        "PRODUCT_STUDIO_BASE_MODEL": str(tiny_model),
        "PRODUCT_STUDIO_DEVICE": "cpu",
        "PRODUCT_STUDIO_CLEANER": "grabcut",
        "PRODUCT_STUDIO_WORK_DIR": str(tmp_path / "work"),
        "PRODUCT_STUDIO_TRAIN__STEPS": "40",  # long enough to be killed in
        "PRODUCT_STUDIO_TRAIN__PRIOR_IMAGES": "2",
        "PRODUCT_STUDIO_TRAIN__VALIDATION_STEPS": "2",
        "PRODUCT_STUDIO_RENDER__STEPS": "2",
        "PRODUCT_STUDIO_RENDER__PRIOR_STEPS": "2",
        "PRODUCT_STUDIO_SCENE_COUNT": "1",
        "PRODUCT_STUDIO_DEFAULT_MARKETPLACES": '["amazon-main"]',
        "PRODUCT_STUDIO_SCORES__DINO_MODEL": str(tiny_encoders[0]),
        "PRODUCT_STUDIO_SCORES__CLIP_MODEL": str(tiny_encoders[1]),
        "PRODUCT_STUDIO_SCORES__MIN_IDENTITY": "-1",
        "PRODUCT_STUDIO_SCORES__MIN_PROMPT": "-1",
        # Short, so the killed run's SKU comes free soon; nothing else would take the survivor's SKUs.
        "PRODUCT_STUDIO_LEASE_SECONDS": "20",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    skus = upload_sample_catalogue(incoming, "kill-cat", photos=3, size=256, with_corrupt_photo=False)
    from product_studio.identifiers import assign_identifiers
    from product_studio.models import load_tokenizer

    return output, assign_identifiers(skus, {}, load_tokenizer(str(tiny_model)))


@pytest.mark.slow
def test_a_batch_run_killed_mid_sku_loses_only_that_sku_which_another_batch_run_takes(catalogue):
    from prefect.settings import PREFECT_API_URL

    from flows.batch import sku_batch_flow

    output, identifiers = catalogue
    run = uuid.uuid4().hex[:8]
    code = "import json, sys; from flows.batch import sku_batch_flow as f; f(*json.loads(sys.argv[1]))"
    doomed = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(["kill-cat", run, identifiers])],
        cwd=ROOT,
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PRODUCT_STUDIO_WORKER_NAME": "doom"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def doomed_holds() -> str | None:
        for sku in identifiers:
            held = leases.read_lease(output, sku_key("kill-cat", sku, "lease.json"))
            if held and held["owner"] == "doom" and not output.exists(batch_done("kill-cat", run, sku)):
                return sku
        return None

    try:
        deadline = time.monotonic() + 300
        while not doomed_holds() and time.monotonic() < deadline and doomed.poll() is None:
            time.sleep(0.2)
        time.sleep(1.0)  # into its stages
        killed = doomed_holds()
        assert killed, "the doomed batch run never held an SKU"
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)  # kill -9: no finally, no release
        doomed.wait()
    assert doomed_holds() == killed

    os.environ["PRODUCT_STUDIO_WORKER_NAME"] = "survivor"
    os.environ["PRODUCT_STUDIO_BATCH_WAIT_SECONDS"] = "180"
    try:
        outcomes = sku_batch_flow("kill-cat", run, identifiers)
    finally:
        del os.environ["PRODUCT_STUDIO_WORKER_NAME"], os.environ["PRODUCT_STUDIO_BATCH_WAIT_SECONDS"]
    ours = [o.sku for o in outcomes]
    # Each SKU once, the killed one too, once its lease expired: after the others when each takes less than
    # the lease, among them on a busy machine (the survivor takes SKUs in order as they come free; that a
    # live lease is never taken is test_a_batch_run_waits_for_a_crashed_runs_sku_and_takes_it_when_...).
    assert sorted(ours) == sorted(identifiers)
    for sku in identifiers:
        done = batches.finished(output, "kill-cat", run, sku)
        assert done is not None and done.status == "published", (sku, done)
    assert batches.finished(output, "kill-cat", run, killed).worker == "survivor"
    assert not output.exists(sku_key("kill-cat", killed, "lease.json"))
    # The survivor loaded its models once: only its first SKU's manifest carries a load.
    from product_studio.manifest import read_published

    loads = [read_published(output, "kill-cat", s).timings_s["model_load_s"] for s in ours]
    assert all(x == 0 for x in loads[1:]), loads
    assert [o.model_load_s for o in outcomes] == loads


def test_the_catalogue_report_gives_skus_per_hour_and_the_share_of_time_spent_loading(buckets):
    from product_studio.publish import publish_catalogue_report

    _, output = buckets
    outcomes = [
        SkuOutcome.published("cat", "a-1", seconds=10.0, model_load_s=4.0),
        SkuOutcome.published("cat", "b-2", seconds=6.0, model_load_s=0.0),
        SkuOutcome.skipped("cat", "c-3", "unchanged", seconds=4.0),
    ]
    publish_catalogue_report(output, "cat", outcomes, seconds=36.0)
    report = json.loads(output.read("cat/catalogue-report.json"))
    assert (report["skus_per_hour"], report["model_load_share"], report["seconds"]) == (200.0, 0.2, 36.0)
    assert [s["model_load_s"] for s in report["skus"]] == [4.0, 0.0, 0.0]
