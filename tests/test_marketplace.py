"""The marketplace never lies: listing.json and the live files agree, whatever kills or races a publisher.

On the real S3 server. After every step the SKU's marketplace prefix is checked: every file listing.json names
exists with the sha256 it states (and, once a run has finished, nothing else is there).
"""

import hashlib
import io
import json
import subprocess
import sys
import threading
import time
import uuid

import pytest
from PIL import Image

from product_studio import leases, publish
from product_studio.manifest import read_published
from product_studio.marketplace import approvals
from product_studio.marketplace.listing import Listing, LiveCard, apply_listing
from product_studio.provenance import labels
from product_studio.review.decisions import Decision, Decisions, write_decisions
from product_studio.storage import Store, make_s3_client

CAT, SKU = "cat", "sku1"
KINDS = {  # card name -> (format, template, colour)
    "amazon-main.jpg": ("amazon-main", None, (255, 255, 255)),
    "ebay-square--oak-table.jpg": ("ebay-square", "oak-table", (200, 30, 30)),
    "ebay-square--beach.jpg": ("ebay-square", "beach", (20, 90, 200)),
}


def _jpeg(colour, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(
        buf, format="JPEG", **labels.save_options("JPEG", labels.label_for(mode))
    )
    return buf.getvalue()


@pytest.fixture
def shop(buckets, tmp_path, make_manifest):
    """``publish_run(run, shade, failing)`` publishes a run of three cards (their colours shifted by
    ``shade``; the ``failing`` ones break their format's rules); ``decide(**verdicts)`` records decisions."""
    _, output = buckets
    marketplace = Store(f"s3://marketplace-{uuid.uuid4().hex[:10]}", client=make_s3_client())
    marketplace.ensure_bucket()

    def publish_run(run: str, shade: int = 0, failing: tuple[str, ...] = ()) -> None:
        base = make_manifest(SKU, run=run).model_dump(by_alias=True)
        records, files = [], {}
        for name, (fmt, template, colour) in KINDS.items():
            mode = "composite" if template else "cutout"
            key = f"runs/{run}/cards/{name}"
            problems = ["source_pixels: the photo is too small"] if name in failing else []
            records.append(
                {
                    "provenance": {"digital_source_type": labels.label_for(mode).digital_source_type},
                    "file": key, "format": fmt, "width": 40, "height": 40,
                    "kind": "scene" if template else "cutout", "render": {"mode": mode, "size": [40, 40]},
                    "compliance": {"format": fmt, "passed": not problems, "problems": problems,
                                   "checks": {"source_pixels": not problems}},
                    "template": template, "seed": 7 if template else None, "scores": {},
                }
            )  # fmt: skip
            path = tmp_path / f"{run}-{name}"
            path.write_bytes(_jpeg(tuple(min(255, c + shade) for c in colour), mode))
            files[key] = path
        manifest = type(make_manifest("x")).model_validate({**base, "cards": records})
        publish.publish_sku(output, manifest, files)

    def decide(**verdicts: list[str]) -> None:
        manifest = read_published(output, CAT, SKU)
        cards = {
            name: Decision(decision=verdict, sha256=manifest.files[f"runs/{manifest.run}/cards/{name}"])
            for verdict, names in verdicts.items()
            for name in names
        }
        write_decisions(output, manifest, Decisions(cards=cards))

    return output, marketplace, publish_run, decide


def _check(marketplace: Store, finished: bool = True) -> dict[str, str]:
    """Every file listing.json names holds the bytes it states; once a run finished, nothing else is there."""
    prefix = f"{CAT}/{SKU}/"
    keys = marketplace.list(prefix)
    if prefix + "listing.json" not in keys:
        assert not finished or keys == []
        return {}
    listing = json.loads(marketplace.read(prefix + "listing.json"))
    named = {c["file"]: c["sha256"] for c in listing["cards"]}
    for file, sha in named.items():
        assert prefix + file in keys, f"listing.json names {file}, which does not exist"
        assert hashlib.sha256(marketplace.read(prefix + file)).hexdigest() == sha, f"{file} holds other bytes"
    if finished:
        assert sorted(keys) == sorted([prefix + "listing.json", *(prefix + f for f in named)])
    return {c["file"]: c["card"] for c in listing["cards"]}


def _publish(output: Store, marketplace: Store, **options) -> approvals.SkuApproval:
    return approvals.publish_approved_sku(output, marketplace, CAT, SKU, **options)


def test_an_approved_card_that_breaks_its_formats_rules_is_refused_and_the_seller_told(shop):
    output, marketplace, publish_run, decide = shop
    publish_run("r1", failing=("amazon-main.jpg",))
    decide(approve=["amazon-main.jpg", "ebay-square--oak-table.jpg"])
    result = _publish(output, marketplace)
    assert result.live == ["ebay-square--oak-table.jpg"]
    assert "does not meet amazon-main's rules (source_pixels" in result.refused["amazon-main.jpg"]
    assert _check(marketplace) == {"ebay-square/1.jpg": "ebay-square--oak-table.jpg"}
    page = output.read(f"{CAT}/{SKU}/review/index.html").decode()
    assert "Approved, but it cannot go live: your photo is too small for a sharp image here" in page


@pytest.mark.slow
def test_a_second_publisher_waits_for_the_first_and_an_sku_run_holds_publishing_off(shop):
    output, marketplace, publish_run, decide = shop
    publish_run("r1")
    decide(approve=["ebay-square--oak-table.jpg", "ebay-square--beach.jpg"])
    slow = Store(marketplace.url(), client=make_s3_client())  # publisher A: its listing write lags

    def lag(params, **_):
        if params.get("Key", "").endswith("listing.json"):
            time.sleep(1.5)

    slow.client.meta.events.register("before-parameter-build.s3.PutObject", lag)
    first = threading.Thread(target=_publish, args=(output, slow))
    first.start()
    time.sleep(0.7)  # A has read the decisions; the seller changes their mind; publisher B starts
    decide(approve=["ebay-square--beach.jpg"], reject=["ebay-square--oak-table.jpg"])
    second = _publish(output, marketplace)
    first.join()
    assert second.status in ("updated", "unchanged")
    assert _check(marketplace) == {"ebay-square/1.jpg": "ebay-square--beach.jpg"}
    # An SKU run holds the lease: publishing waits, then says so, and changes nothing.
    held = leases.sku_lease(output, CAT, SKU, "worker-x", 60, 0)
    decide(approve=["amazon-main.jpg"])
    busy = _publish(output, marketplace, wait=0.5)
    assert busy.status == "busy" and "worker-x" in busy.error
    assert _check(marketplace) == {"ebay-square/1.jpg": "ebay-square--beach.jpg"}
    held.release()
    assert _publish(output, marketplace).live == ["amazon-main.jpg", "ebay-square--beach.jpg"]  # beach: kept


_KILLER = """
import os, signal, sys
from product_studio.marketplace import approvals
from product_studio.storage import Store, make_s3_client
output, marketplace, at = Store(sys.argv[1]), Store(sys.argv[2], client=make_s3_client()), int(sys.argv[3])
writes = []
def kill(params, **_):
    writes.append(params.get("Key"))
    if len(writes) == at:
        os.kill(os.getpid(), signal.SIGKILL)
for op in ("PutObject", "DeleteObject"):
    marketplace.client.meta.events.register(f"before-parameter-build.s3.{op}", kill)
approvals.publish_approved_sku(output, marketplace, "cat", "sku1", lease_seconds=int(sys.argv[4]))
print(len(writes))
"""


def _killed_at(output: Store, marketplace: Store, at: int, lease: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _KILLER, output.url(), marketplace.url(), str(at), str(lease)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.slow
def test_a_publisher_killed_at_any_write_leaves_the_listing_true_and_the_next_run_repairs_it(shop):
    output, marketplace, publish_run, decide = shop
    publish_run("r1")
    decide(approve=["amazon-main.jpg", "ebay-square--beach.jpg"])
    assert _publish(output, marketplace).status == "updated"
    live_before = marketplace.versions(f"{CAT}/{SKU}/")
    # Run r2 replaces run r1 (whose files are gone): the seller approves r2's oak-table card, which takes
    # ebay-square/1 from the beach card (still live from r1, moved to ebay-square/2).
    publish_run("r2", shade=40)
    decide(approve=["ebay-square--oak-table.jpg"])
    expected = {
        "amazon-main/1.jpg": "amazon-main.jpg",
        "ebay-square/1.jpg": "ebay-square--oak-table.jpg",
        "ebay-square/2.jpg": "ebay-square--beach.jpg",
    }
    at, kills = 1, 0
    while True:
        snapshot = {k: marketplace.read(k) for k in live_before}
        done = _killed_at(output, marketplace, at)
        if done.returncode == 0:
            break
        assert done.returncode == -9, done.stderr[-2000:]
        kills += 1
        _check(marketplace, finished=False)  # killed mid-run: the listing is still true
        time.sleep(1.2)  # its lease (1 s) expires
        assert _publish(output, marketplace).status != "error"
        assert _check(marketplace) == expected  # the next run repaired it
        for key, data in snapshot.items():  # back to the state before r2's approvals went live
            marketplace.write(key, data)
        for key in set(marketplace.list(f"{CAT}/{SKU}/")) - set(snapshot):
            marketplace.delete(key)
        at += 1
    assert kills >= 4 and _check(marketplace) == expected


def test_a_killed_publishers_leftover_card_is_removed_by_the_next_run_after_the_seller_changed_their_mind(
    shop,
):
    """Issue 38 #1: killed after writing a new numbered card, before listing.json names it; the seller then
    rejects that card. The next run takes the dead publisher's lease (it lapsed: short, renewed before each
    write) and leaves exactly the listed cards."""
    output, marketplace, publish_run, decide = shop
    publish_run("r1")
    decide(approve=["amazon-main.jpg", "ebay-square--beach.jpg"])
    assert _publish(output, marketplace).status == "updated"
    decide(approve=["ebay-square--oak-table.jpg"])  # it would take ebay-square/1, beach moving to /2
    assert (
        _killed_at(output, marketplace, at=2, lease=3).returncode == -9
    )  # after the first write: a new file
    listed = _check(marketplace, finished=False)
    leftovers = set(marketplace.list(f"{CAT}/{SKU}/")) - {
        f"{CAT}/{SKU}/{f}" for f in [*listed, "listing.json"]
    }
    assert leftovers, "the kill left a card file no listing names"
    decide(reject=["ebay-square--oak-table.jpg"])
    result = _publish(output, marketplace, wait=10)
    assert result.status != "busy" and set(result.removed) == leftovers
    assert _check(marketplace) == {
        "amazon-main/1.jpg": "amazon-main.jpg",
        "ebay-square/1.jpg": "ebay-square--beach.jpg",
    }


def test_a_publisher_killed_with_the_default_lease_is_taken_over_by_the_next_run():
    """The defaults keep that promise: the next publisher waits longer than a killed one's lease lasts, and
    a publisher renews it before every write, so a short lease never lapses mid-run."""
    import inspect

    defaults = inspect.signature(approvals.publish_approved_sku).parameters
    assert defaults["wait"].default > defaults["lease_seconds"].default <= 60
    renewals, store = [], _WriteCounter()
    listing = Listing(catalogue_id=CAT, sku=SKU)
    cards = [
        LiveCard(file=f"ebay-square/{i}.jpg", sha256=hashlib.sha256(b"%d" % i).hexdigest(),
                 format="ebay-square", width=1, height=1, source="s", card=f"c{i}")
        for i in range(1, 4)
    ]  # fmt: skip
    blobs = {c.card: b"%d" % i for i, c in enumerate(cards, start=1)}
    apply_listing(store, listing, listing.model_copy(update={"cards": cards}), blobs,
                  renew=lambda: renewals.append(len(store.writes)))  # fmt: skip
    assert renewals == list(range(len(store.writes)))  # renewed before every write (3 cards, the listing)


class _WriteCounter:
    """A marketplace that records its writes (and lists nothing)."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, key: str, data: bytes, content_type: str) -> None:
        self.writes.append(key)

    def delete(self, key: str) -> None:
        self.writes.append(key)

    def list(self, prefix: str = "") -> list[str]:
        return []
