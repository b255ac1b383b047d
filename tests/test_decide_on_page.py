"""Sellers decide on the review page (issue 21): one decision object per card, written with presigned PUT
URLs that can write nothing else, read back by the page; on the real local S3 server, in real Chromium."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import pytest
from test_approvals import _card, _jpeg, _publish, shop  # noqa: F401  (shop: the fixture)

from flows.cli import main
from product_studio import publish
from product_studio.layout import DECISIONS_ERROR, card_decision
from product_studio.manifest import read_published
from product_studio.marketplace import approvals
from product_studio.records import SkuOutcome
from product_studio.review.decisions import load_decisions, read_decisions

MAIN, SCENE = "amazon-main.jpg", "ebay-square--oak-table.jpg"
SKUS = ("sku1", "sku2")
READ = 'html[data-decisions="read"]'  # the page has read every card's decision from storage


def _link(capsys, *args: str) -> str:
    """Run ``review-link`` and return its last line: the shared page's URL."""
    assert main(["review-link", "cat", *args]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def _page_data(url: str) -> dict:
    """The data a shared page's script reads (its presigned URLs, per SKU and card)."""
    page = urllib.request.urlopen(url).read().decode()
    found = re.search(r'<script type="application/json" id="decide-data">(.*?)</script>', page, re.S)
    assert found, page[:500]
    return json.loads(found.group(1))


def _put(url: str, body: bytes, content_type: str = "application/json") -> int:
    request = urllib.request.Request(url, data=body, method="PUT", headers={"Content-Type": content_type})
    try:
        return urllib.request.urlopen(request).status
    except urllib.error.HTTPError as exc:
        return exc.code


def _body(decision: str, sha256: str, note: str = "") -> bytes:
    return json.dumps({"decision": decision, "sha256": sha256, "note": note}).encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_two_decisions_on_different_cards_at_the_same_moment_both_hold(shop, capsys):  # noqa: F811
    output, marketplace, publish_run = shop
    data = publish_run("r1")
    cards = _page_data(_link(capsys, "sku1", "--expires", "1h"))["skus"]["sku1"]["cards"]
    approvals.mark_done(output, "cat", "sku1", approvals.due_skus(output)[("cat", "sku1")])
    assert approvals.due_skus(output) == {}
    bodies = {MAIN: _body("approve", _sha(data["main"])), SCENE: _body("reject", _sha(data["scene"]), "dull")}
    start = threading.Barrier(len(bodies))

    def decide(name: str) -> int:
        start.wait()  # both writes leave together
        return _put(cards[name]["put"], bodies[name])

    with ThreadPoolExecutor(len(bodies)) as pool:
        assert list(pool.map(decide, bodies)) == [200, 200]
    assert list(approvals.due_skus(output)) == [("cat", "sku1")]  # the scheduled run sees the page's writes
    held = read_decisions(output, read_published(output, "cat", "sku1"))
    assert {n: (d.decision, d.note) for n, d in held.cards.items()} == {
        MAIN: ("approve", ""),
        SCENE: ("reject", "dull"),
    }
    assert _publish(output, marketplace).live == [MAIN]


def test_the_latest_word_on_a_card_holds_whichever_shape_it_came_in(shop, capsys):  # noqa: F811
    output, marketplace, publish_run = shop
    data = publish_run("r1")
    assert main(["review", "cat", "sku1", "--approve", MAIN, SCENE]) == 0  # decisions.json
    cards = _page_data(_link(capsys, "sku1"))["skus"]["sku1"]["cards"]
    time.sleep(1.1)  # the store's clock counts whole seconds
    assert _put(cards[SCENE]["put"], _body("reject", _sha(data["scene"]))) == 200  # newer: the page's
    assert _publish(output, marketplace).live == [MAIN]
    assert _states(capsys) == {MAIN: "approve", SCENE: "reject"}  # what `product-studio review` reads
    time.sleep(1.1)
    assert main(["review", "cat", "sku1", "--approve", SCENE]) == 0  # newer again: decisions.json's
    assert _publish(output, marketplace).live == [MAIN, SCENE]
    assert _states(capsys) == {MAIN: "approve", SCENE: "approve"}


def _states(capsys) -> dict[str, str]:
    """Each card's decision as ``product-studio review`` lists it."""
    capsys.readouterr()
    assert main(["review", "cat", "sku1"]) == 0
    return {line.split()[1]: line.split()[0] for line in capsys.readouterr().out.splitlines()}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not a valid card decision"),
        (b'{"decision": "publish", "sha256": "' + b"0" * 64 + b'"}', "decision"),
        (b'{"decision": "approve"}', "sha256"),
        (b'{"decision": "approve", "sha256": "' + b"0" * 64 + b'", "live": true}', "live"),
    ],
)
def test_a_hostile_card_decision_changes_nothing_live_and_is_reported(shop, capsys, body, expected):  # noqa: F811
    output, marketplace, publish_run = shop
    data = publish_run("r1")
    cards = _page_data(_link(capsys, "sku1"))["skus"]["sku1"]["cards"]
    assert _put(cards[SCENE]["put"], _body("approve", _sha(data["scene"]))) == 200
    assert _publish(output, marketplace).live == [SCENE]
    live = marketplace.versions()
    assert _put(cards[SCENE]["put"], body) == 200  # the store takes any bytes; the reader decides
    assert _put(cards[MAIN]["put"], _body("approve", _sha(data["main"]))) == 200  # another card: counts
    result = _publish(output, marketplace)
    assert result.live == [MAIN, SCENE]  # the scene keeps what was live for it
    assert {k: v for k, v in marketplace.versions().items() if "ebay-square/" in k} == {
        k: v for k, v in live.items() if "ebay-square/" in k
    }
    error = json.loads(output.read(f"cat/sku1/{DECISIONS_ERROR}"))["error"]
    assert expected in error and card_decision(SCENE) in error
    assert load_decisions(output, read_published(output, "cat", "sku1"))[1]  # the problem, for the pages


def test_review_link_refuses_bad_durations(shop, capsys):  # noqa: F811
    _, _, publish_run = shop
    publish_run("r1")
    for bad, says in [("8d", "7 days"), ("1w", "such as 90s"), ("0s", "from 1 s"), ("", "such as 90s")]:
        assert main(["review-link", "cat", "sku1", "--expires", bad]) == 2
        assert says in capsys.readouterr().err, bad
    page = urllib.request.urlopen(_link(capsys, "sku1", "--read-only")).read().decode()
    assert "data-decision" not in page and "<script" not in page  # today's view-only copy


# --- in a browser -----------------------------------------------------------------------------------------


def _publish_second_sku(output, make_manifest, tmp_path, publish_sku=None) -> dict[str, bytes]:
    """sku2: a main image and a scene that meet their rules, and a beach card that breaks them; published
    by ``publish_sku(manifest, files)`` (default: the library's)."""
    base = make_manifest("sku2", run="r1").model_dump(by_alias=True)
    records = [_card(kind, "r1") for kind in ("main", "scene", "beach")]
    records[2]["compliance"] |= {"passed": False, "problems": ["too small"]}
    manifest = type(make_manifest("x")).model_validate({**base, "cards": records})
    data, files = {}, {}
    for record, colour in zip(records, [(250, 250, 250), (10, 120, 10), (10, 10, 120)], strict=True):
        mode = "cutout" if record["kind"] == "cutout" else "composite"
        name = record["file"].rsplit("/", 1)[1]
        data[name] = _jpeg(colour, mode)
        files[record["file"]] = tmp_path / f"sku2-{name}"
        files[record["file"]].write_bytes(data[name])
    (publish_sku or (lambda m, f: publish.publish_sku(output, m, f)))(manifest, files)
    return data


def _edited(url: str, path: str) -> str:
    """A presigned URL with its path (bucket and key) replaced, its signature kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path))


@pytest.mark.slow
def test_a_seller_decides_on_the_page_and_exactly_the_approved_card_goes_live(
    shop,  # noqa: F811
    prefect_server,
    chromium,
    capsys,
    make_manifest,
    tmp_path,
):
    output, marketplace, publish_run = shop
    data = publish_run("r1")
    _publish_second_sku(output, make_manifest, tmp_path)
    outcomes = [
        SkuOutcome.published("cat", sku, manifest=f"cat/{sku}/manifest.json") for sku in ("sku1", "sku2")
    ]
    publish.publish_catalogue_report(output, "cat", outcomes)

    page = chromium.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(_link(capsys, "sku1", "--expires", "1h"))
    state = '[data-card="{}"][data-state="{}"]'
    assert page.locator(state.format(MAIN, "pending")).count() == 1
    assert page.locator(f'button[data-card="{MAIN}"][data-decision="retry"]').count() == 0  # own photo
    page.click(f'button[data-card="{MAIN}"][data-decision="approve"]')
    page.wait_for_selector(state.format(MAIN, "approved"))
    page.fill(f'[data-note-for="{SCENE}"]', "the spout <b>looks</b> bent")
    page.focus(f'button[data-card="{SCENE}"][data-decision="reject"]')
    page.keyboard.press("Enter")  # real buttons: the keyboard works as well as a click
    page.wait_for_selector(state.format(SCENE, "rejected"))
    page.reload()
    page.wait_for_selector(READ)
    assert page.locator(state.format(MAIN, "approved")).count() == 1
    assert page.locator(state.format(SCENE, "rejected")).count() == 1
    assert page.locator('[data-sku="sku1"][data-count="approved"]').inner_text() == "1"
    stored = json.loads(output.read(f"cat/sku1/{card_decision(SCENE)}"))
    assert stored["note"] == "the spout <b>looks</b> bent" and stored["sha256"] == _sha(data["scene"])

    assert main(["publish-approved", "cat"]) == 0
    assert marketplace.list("cat/sku1/") == ["cat/sku1/amazon-main/1.jpg", "cat/sku1/listing.json"]
    assert marketplace.read("cat/sku1/amazon-main/1.jpg") == data["main"]

    # decisions.json written after the page's object: the latest word holds, on the next page too.
    time.sleep(1.1)  # the store's clock counts whole seconds
    assert main(["review", "cat", "sku1", "--approve", SCENE]) == 0
    page.goto(_link(capsys, "sku1", "--expires", "1h"))
    page.wait_for_selector(READ)
    assert page.locator(state.format(SCENE, "approved")).count() == 1

    # On the catalogue's page: approve every card of sku2 that meets its marketplace's rules.
    page.goto(_link(capsys, "--expires", "1h"))
    approved = page.locator('[data-sku="sku2"][data-count="approved"]')
    assert approved.inner_text() == "0"
    page.click('button[data-approve-passing="sku2"]')
    page.wait_for_function(
        "document.querySelector('[data-sku=\"sku2\"][data-count=\"approved\"]').textContent === '2'"
    )
    assert page.locator('[data-sku="sku2"][data-count="pending"]').inner_text() == "1"
    assert page.locator('[data-sku="*"][data-count="pending"]').inner_text() == "1"  # the whole catalogue
    held = read_decisions(output, read_published(output, "cat", "sku2"))
    assert {n: d.decision for n, d in held.cards.items()} == {MAIN: "approve", SCENE: "approve"}
    assert errors == []

    # A PUT URL edited to another key or bucket is refused: its signature covers both.
    put = _page_data(_link(capsys, "sku1", "--expires", "1h"))["skus"]["sku1"]["cards"][MAIN]["put"]
    bucket = output.location.bucket
    before = (output.versions(), marketplace.versions())
    body = _body("approve", _sha(data["main"]))
    for path in (
        f"/{bucket}/cat/sku2/{card_decision(MAIN)}",  # another SKU's decision
        f"/{bucket}/cat/sku1/manifest.json",
        f"/{marketplace.location.bucket}/cat/sku1/{card_decision(MAIN)}",  # the marketplace bucket
        f"/{marketplace.location.bucket}/cat/sku1/amazon-main/1.jpg",
    ):
        assert _put(_edited(put, path), body) == 403, path
    assert _put(put, b"<html>", "text/html") == 403  # its content type is signed too
    assert (output.versions(), marketplace.versions()) == before

    # After the link expires, the open page says so.
    page.goto(_link(capsys, "sku1", "--expires", "3s"))
    page.wait_for_selector(state.format(MAIN, "approved"))
    time.sleep(4)
    page.click(f'button[data-card="{SCENE}"][data-decision="approve"]')
    page.wait_for_selector("#decide-message.bad")
    assert page.inner_text("#decide-message") == "this link has expired; ask for a new one"
    assert page.locator(state.format(SCENE, "approved")).count() == 1  # unchanged


def _preflight(url: str, origin: str) -> dict[str, str]:
    """The CORS headers the store answers a browser's preflight of a PUT from ``origin`` with."""
    request = urllib.request.Request(
        url,
        method="OPTIONS",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    try:
        headers = urllib.request.urlopen(request).headers
    except urllib.error.HTTPError as exc:
        headers = exc.headers
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("access-control-")}


def test_storage_cors_lets_pages_on_another_origin_write_and_keeps_other_rules(shop, capsys):  # noqa: F811
    output, _, publish_run = shop
    publish_run("r1")
    other = {"ID": "cdn", "AllowedOrigins": ["https://cdn.example"], "AllowedMethods": ["GET"]}
    output.set_cors_rules([other])
    put = _page_data(_link(capsys, "sku1"))["skus"]["sku1"]["cards"][MAIN]["put"]
    assert _preflight(put, "https://reviews.example") == {}  # no rule yet: a browser would refuse the PUT
    for _ in range(2):  # applying it again replaces our rule, never adds a second one
        assert main(["storage", "cors", "--origin", "https://reviews.example"]) == 0
    allowed = _preflight(put, "https://reviews.example")
    assert allowed["access-control-allow-origin"] == "https://reviews.example"
    assert "PUT" in allowed["access-control-allow-methods"]
    assert _preflight(put, "https://elsewhere.example") == {}
    assert [r.get("ID") for r in output.cors_rules()] == ["cdn", "product-studio-review-pages"]
    assert main(["storage", "cors", "--origin", "https://reviews.example/pages/"]) == 2
    assert "no path" in capsys.readouterr().err


@pytest.fixture
def emitted(monkeypatch):
    """The events emitted since the last call (Prefect's own recording events client), ours only."""
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker

    worker = EventsWorker.instance(AssertingEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)

    def ours() -> list:
        worker.wait_until_empty()
        found = [e for client in AssertingEventsClient.all for e in client.pop_events()]
        return [e for e in found if e.event.startswith("product-studio.")]

    yield ours
    worker.drain()
    AssertingEventsClient.reset()


def test_the_flows_tell_people_when_cards_wait_for_review_and_when_they_go_live(
    shop,  # noqa: F811
    prefect_server,
    emitted,
    make_manifest,
    tmp_path,
    monkeypatch,
):
    from flows import events, tasks
    from product_studio.settings import Settings

    output, _, _ = shop
    monkeypatch.setenv("PRODUCT_STUDIO_REVIEW_LINK_SECONDS", "3600")
    publish_sku = tasks.publish_sku.fn  # the SKU flow's (and the retry flow's) publish step
    _publish_second_sku(output, make_manifest, tmp_path, lambda m, f: publish_sku(Settings(), m, f))
    (ready,) = emitted()
    assert ready.event == "product-studio.review.ready"
    assert ready.resource.id == "product-studio.sku.cat.sku2"
    payload = ready.payload
    assert (payload["catalogue"], payload["sku"]) == ("cat", "sku2")
    assert payload["review_page"] == output.url("cat/sku2/review/index.html")
    page = urllib.request.urlopen(payload["review_link"]).read().decode()  # works without credentials
    assert f'data-card="{MAIN}"' in page and 'data-decision="approve"' in page

    assert main(["review", "cat", "sku2", "--approve", MAIN]) == 0
    assert main(["publish-approved", "cat"]) == 0
    (live,) = emitted()
    assert live.event == "product-studio.cards.live" and live.payload["live"] == [MAIN]
    assert live.payload["listing"].endswith("/cat/sku2/listing.json") and live.payload["review_link"]
    assert main(["publish-approved", "cat"]) == 0  # nothing changed: no event
    assert emitted() == []
    events.review_ready(Settings(), "cat", "nosuch")  # no link can be made: the event goes out without one
    (linkless,) = emitted()
    assert linkless.payload["sku"] == "nosuch" and linkless.payload["review_link"] is None


def test_the_example_automation_is_valid_and_listens_for_both_events():
    from pathlib import Path

    import yaml
    from prefect.events.schemas.automations import AutomationCore

    text = (Path(__file__).parents[1] / "infra" / "automation-webhook.yaml").read_text()
    automations = [AutomationCore.model_validate(a) for a in yaml.safe_load(text)["automations"]]
    expected = {event for a in automations for event in a.trigger.expect}
    assert expected == {"product-studio.review.ready", "product-studio.cards.live"}
    assert {type(action).__name__ for a in automations for action in a.actions} == {"CallWebhook"}


def test_a_link_the_seller_holds_keeps_working_after_the_cards_are_made_again(
    shop,  # noqa: F811
    chromium,
    capsys,
):
    """Issue 35: a note survives a reload; after a new run replaced a card, the old link shows no broken
    image and says which card was made again; once a card is live, the page says since when; the page
    fits a phone (390 px) without sideways scrolling."""
    output, marketplace, publish_run = shop
    data = publish_run("r1")
    old_link = _link(capsys, "sku1", "--expires", "1h")
    page = chromium.new_page(viewport={"width": 390, "height": 844})
    page.goto(old_link)
    page.wait_for_selector(READ)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.fill(f'[data-note-for="{SCENE}"]', "the handle looks bent")
    page.click(f'button[data-card="{SCENE}"][data-decision="retry"]')
    page.click(f'button[data-card="{MAIN}"][data-decision="approve"]')
    page.wait_for_selector(f'[data-card="{MAIN}"][data-state="approved"]')
    page.reload()
    page.wait_for_selector(READ)
    assert page.input_value(f'[data-note-for="{SCENE}"]') == "the handle looks bent"  # from storage
    assert "Being made again" in page.inner_text(f'[data-card="{SCENE}"][data-state="retry"]')

    assert _publish(output, marketplace).live == [MAIN]
    publish_run("r2", scene_colour=(30, 30, 200))  # the scene card made again (a new run): r1 is replaced
    assert output.exists(f"cat/sku1/runs/r1/cards/{SCENE}")  # kept while links to r1 may be open
    page.goto(old_link)
    page.wait_for_selector(READ)
    broken = page.evaluate(
        "Promise.all([...document.images].map((i) => i.decode().then(() => null, () => i.src)))"
    )
    assert [b for b in broken if b] == []  # every image of the old link still loads
    assert page.is_visible("#newer")  # "ask for a new link"
    assert "Made again since this link was made" in page.inner_text(f'[data-card="{SCENE}"][data-state]')
    assert page.locator(f'button[data-card="{SCENE}"]:visible').count() == 0  # nothing to decide on here
    main_state = page.inner_text(f'[data-card="{MAIN}"][data-state]')
    assert main_state.startswith("Live on Amazon since ")  # its pixels are live, whatever run made them
    visible = page.inner_text("body")
    for internal in ("olis", "identity_dino", "prompt_clip", "manifest.json", "/tmp/"):
        assert internal not in visible, internal
    assert data["main"] == marketplace.read("cat/sku1/amazon-main/1.jpg")


def test_bulk_approval_leaves_every_card_the_seller_already_decided(
    shop,  # noqa: F811
    chromium,
    capsys,
    make_manifest,
    tmp_path,
):
    """Issue 34 #1: "approve every card that meets its rules" approves only cards still undecided: a card
    rejected on this page, or sent back or rejected from another tab since the page was opened, keeps that
    word, on the SKU's page and on the catalogue's."""
    output, marketplace, publish_run = shop
    publish_run("r1")
    sku2 = _publish_second_sku(output, make_manifest, tmp_path)
    outcomes = [SkuOutcome.published("cat", s, manifest=f"cat/{s}/manifest.json") for s in SKUS]
    publish.publish_catalogue_report(output, "cat", outcomes)
    state = '[data-card="{}"][data-state="{}"]'
    done = "document.getElementById('decide-message').textContent.startsWith('Saved: every')"

    page = chromium.new_page()
    page.goto(_link(capsys, "sku1", "--expires", "1h"))
    page.wait_for_selector(READ)
    page.click(f'button[data-card="{SCENE}"][data-decision="reject"]')
    page.wait_for_selector(state.format(SCENE, "rejected"))
    page.click('button[data-approve-passing="sku1"]')
    page.wait_for_function(done)
    assert page.locator(state.format(SCENE, "rejected")).count() == 1
    held = read_decisions(output, read_published(output, "cat", "sku1"))
    assert {n: d.decision for n, d in held.cards.items()} == {MAIN: "approve", SCENE: "reject"}
    assert _publish(output, marketplace).live == [MAIN]

    # The catalogue's page, opened before another tab sends sku2's scene back.
    page.goto(_link(capsys, "--expires", "1h"))
    page.wait_for_selector(READ)
    other_tab = _page_data(_link(capsys, "sku2", "--expires", "1h"))["skus"]["sku2"]["cards"]
    assert _put(other_tab[SCENE]["put"], _body("retry", _sha(sku2[SCENE]), "too dark")) == 200
    page.click('button[data-approve-passing="*"]')
    page.wait_for_function(done)
    held = read_decisions(output, read_published(output, "cat", "sku2"))
    assert {n: (d.decision, d.note) for n, d in held.cards.items()} == {
        MAIN: ("approve", ""),
        SCENE: ("retry", "too dark"),
    }
    held = read_decisions(output, read_published(output, "cat", "sku1"))
    assert {n: d.decision for n, d in held.cards.items()} == {MAIN: "approve", SCENE: "reject"}
    counts = {n: page.inner_text(f'[data-sku="sku2"][data-count="{n}"]') for n in ("approved", "retry")}
    assert counts == {"approved": "1", "retry": "1"}  # sku2's, as storage holds it
