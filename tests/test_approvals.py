"""Sellers' decisions and publishing approved cards, on the real local S3 server (issue 12's contract)."""

import hashlib
import io
import json
import time
import urllib.error
import urllib.request
import uuid

import pytest
from PIL import Image

from flows.cli import main
from product_studio import publish
from product_studio.layout import DECISIONS, DECISIONS_ERROR
from product_studio.manifest import read_published
from product_studio.marketplace import approvals
from product_studio.provenance import labels
from product_studio.review.decisions import read_decisions, usable_decisions, write_decisions
from product_studio.storage import Store

CARDS = {
    "main": "runs/{run}/cards/amazon-main.jpg",
    "scene": "runs/{run}/cards/ebay-square--oak-table.jpg",
    "beach": "runs/{run}/cards/ebay-square--beach.jpg",
}


def _card(kind: str, run: str, old: bool = False) -> dict:
    fmt = "amazon-main" if kind == "main" else "ebay-square"
    term = "algorithmicallyEnhanced" if kind == "main" else "compositeWithTrainedAlgorithmicMedia"
    return {
        # Cards made before labels existed have no provenance (their manifests still read).
        **({} if old else {"provenance": {"digital_source_type": term}}),
        "file": CARDS[kind].format(run=run),
        "format": fmt,
        "width": 40,
        "height": 40,
        "kind": "cutout" if kind == "main" else "scene",
        "render": {"mode": "cutout" if kind == "main" else "composite", "size": [40, 40]},
        "compliance": {"format": fmt, "passed": True, "checks": {}, "problems": []},
        "template": {"main": None, "scene": "oak-table", "beach": "beach"}[kind],
        "seed": None if kind == "main" else 7,
        "scores": {"identity_dino": 0.9},
    }


def _jpeg(colour: tuple[int, int, int], mode: str | None) -> bytes:
    """A card's bytes, labelled as the pipeline labels a card made in ``mode`` (None: no label)."""
    buf = io.BytesIO()
    options = labels.save_options("JPEG", labels.label_for(mode)) if mode else {}
    Image.new("RGB", (40, 40), colour).save(buf, format="JPEG", **options)
    return buf.getvalue()


@pytest.fixture
def shop(buckets, tmp_path, make_manifest, monkeypatch):
    """An SKU with a main image and a scene card published to the output bucket; an empty marketplace."""
    _, output = buckets
    marketplace = Store(f"s3://marketplace-{uuid.uuid4().hex[:10]}")
    marketplace.ensure_bucket()
    monkeypatch.setenv("PRODUCT_STUDIO_OUTPUT", output.url())
    monkeypatch.setenv("PRODUCT_STUDIO_MARKETPLACE", marketplace.url())

    def publish_run(
        run: str,
        scene_colour=(200, 30, 30),
        beach: bool = False,
        unlabelled=(),
        old: bool = False,
        licence: str | None = None,
    ) -> dict[str, bytes]:
        """Publish a run; the cards of the ``unlabelled`` kinds lost their labels (all of them: ``old``);
        ``licence``: the base model's, as the manifest records it."""
        base = make_manifest("sku1", run=run).model_dump(by_alias=True)
        base["base_model"]["license"] = licence
        kinds = ["main", "scene", "beach"] if beach else ["main", "scene"]
        records = [_card(k, run, old) for k in kinds]
        manifest = type(make_manifest("x")).model_validate({**base, "cards": records})
        colours = {"main": (255, 255, 255), "scene": scene_colour, "beach": (20, 90, 200)}
        modes = {
            k: None if old or k in unlabelled else ("cutout" if k == "main" else "composite") for k in kinds
        }
        data = {k: _jpeg(colours[k], modes[k]) for k in kinds}
        files = {}
        for kind, body in data.items():
            path = tmp_path / f"{run}-{kind}.jpg"
            path.write_bytes(body)
            files[CARDS[kind].format(run=run)] = path
        publish.publish_sku(output, manifest, files)
        return data

    return output, marketplace, publish_run


def _publish(output: Store, marketplace: Store) -> approvals.SkuApproval:
    return approvals.publish_approved_sku(output, marketplace, "cat", "sku1")


def test_nothing_reaches_the_marketplace_without_an_approval(shop, capsys):
    output, marketplace, publish_run = shop
    publish_run("r1")
    assert _publish(output, marketplace).live == []
    assert marketplace.list() == []
    assert main(["review", "cat", "sku1"]) == 0  # lists the cards, every one pending
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out] == [
        ["pending", "amazon-main.jpg"],
        ["pending", "ebay-square--oak-table.jpg"],
    ]


def test_approve_publishes_byte_identical_cards_then_reject_removes_them(shop, capsys):
    output, marketplace, publish_run = shop
    data = publish_run("r1")
    args = ["review", "cat", "sku1", "--approve", "amazon-main.jpg", "ebay-square--oak-table.jpg"]
    assert main([*args, "--note", "looks <b>great</b>", "--by", "ann"]) == 0
    decisions = json.loads(output.read(f"cat/sku1/{DECISIONS}"))
    assert decisions["by"] == "ann" and decisions["cards"]["amazon-main.jpg"]["decision"] == "approve"
    assert decisions["cards"]["amazon-main.jpg"]["sha256"] == hashlib.sha256(data["main"]).hexdigest()

    result = _publish(output, marketplace)
    assert result.status == "updated" and result.live == ["amazon-main.jpg", "ebay-square--oak-table.jpg"]
    assert marketplace.read("cat/sku1/amazon-main/1.jpg") == data["main"]
    assert marketplace.read("cat/sku1/ebay-square/1.jpg") == data["scene"]
    listing = json.loads(marketplace.read("cat/sku1/listing.json"))
    assert [c["file"] for c in listing["cards"]] == ["amazon-main/1.jpg", "ebay-square/1.jpg"]  # main first
    first = listing["cards"][0]
    assert first["sha256"] == hashlib.sha256(data["main"]).hexdigest() and first["format"] == "amazon-main"
    assert first["source"] == "cat/sku1/runs/r1/cards/amazon-main.jpg"
    assert listing["manifest"] == "cat/sku1/manifest.json" and listing["run"] == "r1"
    # The seller's page shows the decisions now in force, the note as text.
    page = output.read("cat/sku1/review/index.html").decode()
    assert "approved" in page and "looks &lt;b&gt;great&lt;/b&gt;" in page

    puts: list[str] = []
    marketplace.client.meta.events.register(
        "provide-client-params.s3.PutObject",
        lambda params, **_: (
            puts.append(params["Key"]) if params["Bucket"] == marketplace.location.bucket else None
        ),
    )
    assert _publish(output, marketplace).status == "unchanged" and puts == []  # idempotent

    assert main(["review", "cat", "sku1", "--reject", "ebay-square--oak-table.jpg"]) == 0
    result = _publish(output, marketplace)
    assert result.removed == ["cat/sku1/ebay-square/1.jpg"]
    assert marketplace.list("cat/sku1/") == ["cat/sku1/amazon-main/1.jpg", "cat/sku1/listing.json"]
    assert [c["card"] for c in json.loads(marketplace.read("cat/sku1/listing.json"))["cards"]] == [
        "amazon-main.jpg"
    ]


def test_a_stale_approval_publishes_nothing_and_a_live_card_stays_until_decided_again(shop):
    output, marketplace, publish_run = shop
    publish_run("r1")
    assert main(["review", "cat", "sku1", "--approve", "ebay-square--oak-table.jpg"]) == 0
    publish_run("r2", scene_colour=(30, 30, 200))  # a re-run made new pixels before anything was published
    assert _publish(output, marketplace).live == [] and marketplace.list() == []

    assert main(["review", "cat", "sku1", "--approve", "ebay-square--oak-table.jpg"]) == 0  # on r2's card
    assert _publish(output, marketplace).live == ["ebay-square--oak-table.jpg"]
    live = marketplace.read("cat/sku1/ebay-square/1.jpg")
    publish_run("r3", scene_colour=(30, 200, 30))  # another re-run: the seller has not seen r3's card
    assert _publish(output, marketplace).live == ["ebay-square--oak-table.jpg"]
    assert marketplace.read("cat/sku1/ebay-square/1.jpg") == live  # the approved r2 card stays live


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not a valid decisions file"),
        (b'{"cards": {"amazon-main.jpg": {"decision": "yes", "sha256": "' + b"0" * 64 + b'"}}}', "decision"),
        (b'{"cards": {"amazon-main.jpg": {"decision": "approve"}}}', "sha256"),
        (b'{"by": "Ren\xe9e"}', "is not UTF-8 text (byte 11 is 0xe9)"),  # Latin-1, as old editors save
        (b"[1, 2]", "not a valid decisions file"),
        (  # one card decided twice: the last would silently win
            b'{"cards": {"amazon-main.jpg": {"decision": "approve", "sha256": "' + b"0" * 64 + b'"}, '
            b'"amazon-main.jpg": {"decision": "reject", "sha256": "' + b"0" * 64 + b'"}}}',
            "names 'amazon-main.jpg' twice in one object",
        ),
        (b'{"schema": "product-studio/decisions/v9-beta", "cards": {}}', "schema: Input should be"),
    ],
)
def test_a_bad_decisions_file_is_recorded_beside_it_and_changes_nothing(shop, body, expected):
    output, marketplace, publish_run = shop
    publish_run("r1")
    output.write(f"cat/sku1/{DECISIONS}", body, "application/json")
    result = _publish(output, marketplace)
    assert result.status == "error" and expected in result.error
    recorded = json.loads(output.read(f"cat/sku1/{DECISIONS_ERROR}"))
    assert expected in recorded["error"] and recorded["at"]
    assert marketplace.list() == []
    assert main(["review", "cat", "sku1", "--approve", "amazon-main.jpg"]) == 0  # replaces the bad file
    assert _publish(output, marketplace).live == ["amazon-main.jpg"]
    assert not output.exists(f"cat/sku1/{DECISIONS_ERROR}")


def test_a_30_mb_decisions_file_is_reported_to_the_seller_unread_and_changes_nothing(shop):
    """Issue 20 #3: refused from its size in the store (Store.read checks it before reading), recorded for
    the seller."""
    from product_studio.layout import DECISIONS_MAX_BYTES

    output, marketplace, publish_run = shop
    publish_run("r1")
    assert main(["review", "cat", "sku1", "--approve", "amazon-main.jpg"]) == 0
    assert _publish(output, marketplace).live == ["amazon-main.jpg"]
    body = b'{"cards": {}, "by": "' + b"x" * 30_000_000 + b'"}'
    output.write(f"cat/sku1/{DECISIONS}", body, "application/json")
    result = _publish(output, marketplace)
    assert result.status == "error" and f"over the {DECISIONS_MAX_BYTES:,}-byte limit" in result.error
    recorded = json.loads(output.read(f"cat/sku1/{DECISIONS_ERROR}"))
    assert "cat/sku1/review/decisions.json is over the 1,000,000-byte limit" in recorded["error"]
    assert marketplace.read("cat/sku1/amazon-main/1.jpg")  # what was live stays live
    # The SKU's next run goes on without the file (keeping no tries from it) instead of failing.
    decisions, problem = usable_decisions(output, read_published(output, "cat", "sku1"))
    assert decisions is None and "over the 1,000,000-byte limit" in problem
    assert main(["review", "cat", "sku1", "--reject", "amazon-main.jpg"]) == 0  # the CLI replaces it
    assert _publish(output, marketplace).status == "updated"
    assert marketplace.list() == ["cat/sku1/listing.json"]  # nothing live: the main image was rejected
    assert not output.exists(f"cat/sku1/{DECISIONS_ERROR}")


def test_review_cli_refuses_unknown_cards_and_two_decisions_for_one_card(shop, capsys):
    _, _, publish_run = shop
    publish_run("r1")
    assert main(["review", "cat", "sku1", "--approve", "missing.jpg"]) == 2
    assert "missing.jpg" in capsys.readouterr().err
    args = ["review", "cat", "sku1", "--approve", "amazon-main.jpg", "--reject", "amazon-main.jpg"]
    assert main(args) == 2
    assert "two decisions" in capsys.readouterr().err
    assert main(["review", "cat", "nosuch"]) == 2


def test_publish_approved_only_reads_skus_whose_decisions_or_manifest_changed(shop):
    output, _, publish_run = shop
    publish_run("r1")
    due = approvals.due_skus(output)
    assert list(due) == [("cat", "sku1")]
    approvals.mark_done(output, "cat", "sku1", due[("cat", "sku1")])
    assert approvals.due_skus(output) == {}
    assert main(["review", "cat", "sku1", "--approve", "amazon-main.jpg"]) == 0
    assert list(approvals.due_skus(output, "cat")) == [("cat", "sku1")]


@pytest.mark.slow
def test_review_link_expires(shop, capsys):
    _, _, publish_run = shop
    publish_run("r1")
    assert main(["review-link", "cat", "sku1", "--expires", "3s"]) == 0
    url = capsys.readouterr().out.strip()
    page = urllib.request.urlopen(url).read().decode()
    images = [part.split('"')[0] for part in page.split('src="')[1:]]
    assert images and all("X-Amz-Signature" in src for src in images)
    cards = [src for src in images if "/cards/" in src]  # (the fixture's run has no loss curve)
    assert len(cards) == 2
    for src in cards:  # the shared page's links work without credentials
        assert urllib.request.urlopen(src.replace("&amp;", "&")).status == 200
    time.sleep(4)
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(url)
    assert denied.value.code == 403
    assert main(["review-link", "cat", "sku1", "--expires", "8d"]) == 2
    assert "7 days" in capsys.readouterr().err


def test_the_published_json_schema_is_the_models():
    from pathlib import Path

    from product_studio.review.decisions import json_schema

    written = json.loads((Path(__file__).parents[1] / "docs" / "decisions.schema.json").read_text())
    assert written == json_schema()


def test_decisions_on_cards_no_longer_proposed_are_reported_and_the_others_still_count(shop):
    output, marketplace, publish_run = shop
    data = publish_run("r1")
    sha = hashlib.sha256(data["main"]).hexdigest()
    body = {
        "cards": {
            "amazon-main.jpg": {"decision": "approve", "sha256": sha},
            "gone--scene.jpg": {"decision": "approve", "sha256": "0" * 64},  # a card a re-run dropped
        }
    }
    output.write(f"cat/sku1/{DECISIONS}", json.dumps(body).encode(), "application/json")
    result = _publish(output, marketplace)
    assert result.live == ["amazon-main.jpg"]
    assert "gone--scene.jpg" in json.loads(output.read(f"cat/sku1/{DECISIONS_ERROR}"))["error"]


def test_cards_renumbered_when_an_earlier_card_is_approved_later_keep_their_own_bytes(shop):
    output, marketplace, publish_run = shop
    data = publish_run("r1", beach=True)
    assert main(["review", "cat", "sku1", "--approve", "ebay-square--beach.jpg"]) == 0
    assert _publish(output, marketplace).live == ["ebay-square--beach.jpg"]
    assert marketplace.read("cat/sku1/ebay-square/1.jpg") == data["beach"]
    # Approving the card before it in the manifest's order moves beach to number 2.
    assert main(["review", "cat", "sku1", "--approve", "ebay-square--oak-table.jpg"]) == 0
    assert _publish(output, marketplace).live == ["ebay-square--oak-table.jpg", "ebay-square--beach.jpg"]
    assert marketplace.read("cat/sku1/ebay-square/1.jpg") == data["scene"]
    assert marketplace.read("cat/sku1/ebay-square/2.jpg") == data["beach"]


def test_a_retry_asked_of_the_main_image_is_refused_and_keeps_it_live(shop, capsys):
    output, marketplace, publish_run = shop
    publish_run("r1")
    assert main(["review", "cat", "sku1", "--approve", "amazon-main.jpg"]) == 0
    assert _publish(output, marketplace).live == ["amazon-main.jpg"]
    assert main(["review", "cat", "sku1", "--retry", "amazon-main.jpg"]) == 2  # refused: nothing to remake
    assert "['amazon-main.jpg'] show the seller's own photo" in capsys.readouterr().err
    manifest = read_published(output, "cat", "sku1")
    held = read_decisions(output, manifest)
    retried = held.cards["amazon-main.jpg"].model_copy(update={"decision": "retry"})
    write_decisions(output, manifest, held.model_copy(update={"cards": {"amazon-main.jpg": retried}}))
    assert _publish(output, marketplace).live == ["amazon-main.jpg"]  # a file asking it anyway: still live


def test_an_approved_card_whose_label_was_stripped_is_refused_and_the_seller_told_why(shop):
    output, marketplace, publish_run = shop
    data = publish_run("r1", beach=True, unlabelled={"scene"})
    cards = ["amazon-main.jpg", "ebay-square--oak-table.jpg", "ebay-square--beach.jpg"]
    assert main(["review", "cat", "sku1", "--approve", *cards]) == 0
    result = _publish(output, marketplace)
    assert result.live == ["amazon-main.jpg", "ebay-square--beach.jpg"]  # the other cards go live
    assert list(result.refused) == ["ebay-square--oak-table.jpg"]
    assert "no IPTC digital source type" in result.refused["ebay-square--oak-table.jpg"]
    assert marketplace.read("cat/sku1/ebay-square/1.jpg") == data["beach"]  # the refused card's number freed
    live = marketplace.read("cat/sku1/amazon-main/1.jpg")
    assert live == data["main"] and labels.read_label(live).digital_source_type == "algorithmicallyEnhanced"
    listing = json.loads(marketplace.read("cat/sku1/listing.json"))
    assert [c["card"] for c in listing["cards"]] == ["amazon-main.jpg", "ebay-square--beach.jpg"]
    page = output.read("cat/sku1/review/index.html").decode()
    # The seller is told it cannot go live (the operator's reason is in the run's log and the result).
    assert "Approved, but it cannot go live: a problem on our side" in page
    assert "labelled in the file as your photo, background removed" in page  # each card's label, in words


def test_cards_made_before_labels_still_read_and_are_refused_with_what_to_do(shop):
    output, marketplace, publish_run = shop
    publish_run("r1", old=True)
    assert main(["review", "cat", "sku1", "--approve", "amazon-main.jpg"]) == 0
    result = _publish(output, marketplace)
    assert result.live == [] and "--force" in result.refused["amazon-main.jpg"]
    assert marketplace.list() == []
    assert (
        "no label in the file (made before cards were labelled)"
        in output.read("cat/sku1/review/index.html").decode()
    )


def test_a_new_run_renders_a_sent_back_scene_again_and_keeps_an_earlier_try(make_manifest):
    from pathlib import Path

    from product_studio.cards.formats import FORMATS
    from product_studio.cards.planning import CardPlan, seed_key
    from product_studio.marketplace.rerender import SEED_STEP, keep_tries
    from product_studio.rendering.scenes import load_library
    from product_studio.review.decisions import Decision, Decisions

    library = load_library(Path(__file__).parents[1] / "templates")
    oak, beach = library["oak-table"], library["beach"]
    plan = CardPlan(formats=[FORMATS["ebay-square"]], templates=[oak, beach])
    cards = [_card("main", "r2"), _card("scene", "r2"), _card("beach", "r2")]
    cards[1] |= {"seed": oak.seed + 1, "candidate": {"index": 1, "of": 2, "rank": 1}}  # rendered as planned
    cards[2] |= {"seed": beach.seed + SEED_STEP + 4}  # made again at the seller's request before
    base = make_manifest("sku1", run="r2").model_dump(by_alias=True)
    files = {c["file"]: hashlib.sha256(c["file"].encode()).hexdigest() for c in cards}
    manifest = type(make_manifest("x")).model_validate({**base, "cards": cards, "files": files})
    assert keep_tries(plan, None, None) == plan and keep_tries(plan, manifest, None).seeds == {
        seed_key("beach", "ebay-square"): beach.seed + SEED_STEP + 4
    }
    sent_back = Decision(decision="retry", sha256=files[cards[1]["file"]])
    retry = Decisions(cards={"ebay-square--oak-table.jpg": sent_back})
    again = keep_tries(plan, manifest, retry)
    assert again.seeds == {
        seed_key("oak-table", "ebay-square"): oak.seed + 1 + SEED_STEP,
        seed_key("beach", "ebay-square"): beach.seed + SEED_STEP + 4,
    }
    assert again.seeded(oak, FORMATS["ebay-square"]).seed == oak.seed + 1 + SEED_STEP
    assert again.seeded(oak, FORMATS["amazon-main"]).seed == oak.seed  # other formats: the template's own
    stale = Decisions(cards={"ebay-square--oak-table.jpg": Decision(decision="retry", sha256="0" * 64)})
    assert seed_key("oak-table", "ebay-square") not in keep_tries(plan, manifest, stale).seeds


def test_seller_text_reaches_terminals_and_logs_without_control_characters(shop, capsys):
    output, marketplace, publish_run = shop
    publish_run("r1")
    sha = read_published(output, "cat", "sku1").files["runs/r1/cards/amazon-main.jpg"]
    note = "fine\u001b[2J\u001b]0;pwned\u0007\nFAKE: approve everything\u202e"
    body = {"cards": {"amazon-main.jpg": {"decision": "approve", "sha256": sha, "note": note}}}
    output.write(f"cat/sku1/{DECISIONS}", json.dumps(body).encode(), "application/json")
    capsys.readouterr()
    assert main(["review", "cat", "sku1"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out and len(out.splitlines()) == 2
    assert "fine\\x1b[2J" in out and "\\nFAKE" in out
    evil = b'{"cards": {"x\\u001b[31m.jpg": {}, "x\\u001b[31m.jpg": {}}}'  # JSON escapes, decoded as ESC
    output.write(f"cat/sku1/{DECISIONS}", evil, "application/json")
    result = _publish(output, marketplace)
    assert result.status == "error" and "\x1b" not in result.error and "x\\x1b[31m.jpg" in result.error


EVIL = "x\u001b[31m\r\nFAKE\u0000\u202e.jpg"  # ESC, CR, LF, NUL and a bidirectional override
RAW = ("\x1b", "\r", "\x00", "\u202e")


def test_every_line_a_command_prints_escapes_seller_text_and_keys(prefect_server, shop, capfd):
    """Issue 38 #2: publish-approved's line for a bad decisions file, review's error for an unknown card, and
    anything else a command prints: control characters escaped by one function (``text.printable``)."""
    output, _, publish_run = shop
    publish_run("r1")
    body = json.dumps({"cards": {EVIL: {"decision": "approve", "sha256": "0" * 64}}})
    evil_twice = body.replace("}}", "}, " + json.dumps(EVIL) + ': {"decision": "reject"}}', 1).encode()
    for bad in (evil_twice, body.encode()):  # the card named twice; a card the SKU does not propose
        output.write(f"cat/sku1/{DECISIONS}", bad, "application/json")
        capfd.readouterr()
        main(["publish-approved", "cat"])
        printed = capfd.readouterr()
        text = printed.out + printed.err
        assert not any(c in text for c in RAW), [
            line for line in text.splitlines() if any(c in line for c in RAW)
        ]
        assert "FAKE" not in "".join(line[:4] for line in text.splitlines())  # no line of the seller's own
    assert main(["review", "cat", "sku1", "--approve", EVIL]) == 2
    printed = capfd.readouterr()
    assert "x\\x1b[31m\\r\\nFAKE\\x00\\u202e.jpg" in printed.err and not any(c in printed.err for c in RAW)


def test_a_marketplace_bucket_that_does_not_exist_is_named_even_with_nothing_to_publish(
    prefect_server, shop, capfd, monkeypatch
):
    """Issue 35: a typo'd PRODUCT_STUDIO_MARKETPLACE went unnoticed until a card was approved."""
    shop[2]("r1")  # proposed, nothing approved: nothing to publish
    monkeypatch.setenv("PRODUCT_STUDIO_MARKETPLACE", f"s3://no-such-marketplace-{uuid.uuid4().hex[:8]}")
    capfd.readouterr()
    assert main(["publish-approved", "cat"]) == 2
    printed = capfd.readouterr()
    assert "does not exist" in printed.err and "PRODUCT_STUDIO_MARKETPLACE" in printed.err


def test_cards_of_a_non_commercial_model_never_reach_the_marketplace(shop, capsys):
    """Issue 34 #2: a run allowed a non-commercial base model (PRODUCT_STUDIO_ALLOW_NONCOMMERCIAL_MODELS)
    proposes cards the seller can look at, but publish-approved refuses every one, naming the licence; the
    pages say so on every card, and bulk approval leaves them out."""
    output, marketplace, publish_run = shop
    publish_run("r1", licence="flux-non-commercial-license")
    page = output.read("cat/sku1/review/index.html").decode()
    assert page.count("licensed for non-commercial use only") == 2  # on every card
    names = ["amazon-main.jpg", "ebay-square--oak-table.jpg"]
    assert main(["review", "cat", "sku1", "--approve", *names]) == 0
    capsys.readouterr()
    assert main(["publish-approved", "cat"]) == 1
    out = capsys.readouterr().out
    assert out.count("flux-non-commercial-license") == 2, out
    assert [k for k in marketplace.list() if k.endswith(".jpg")] == []
    result = _publish(output, marketplace)
    assert result.live == [] and set(result.refused) == set(names)
    assert all("non-commercial use only" in why for why in result.refused.values())
    if marketplace.exists("cat/sku1/listing.json"):
        assert json.loads(marketplace.read("cat/sku1/listing.json"))["cards"] == []
    page = output.read("cat/sku1/review/index.html").decode()
    assert page.count("Approved, but it cannot go live") == 2
