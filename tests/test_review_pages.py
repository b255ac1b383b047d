"""The review pages: escaping, relative links, decisions, and the real thing in headless Chromium."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import system_chromium
from PIL import Image, ImageDraw

from product_studio.layout import REVIEW_PAGE
from product_studio.manifest import Manifest
from product_studio.photos import advice as photo_advice
from product_studio.records import LightInfo, PhotoSetAdvice, ProductPlacement
from product_studio.review.contact_sheet import contact_sheet, to_jpeg
from product_studio.review.decisions import Decision, Decisions
from product_studio.review.pages import (
    SkuRow,
    decision_targets,
    page_writes,
    render_catalogue_index,
    render_review_page,
)

HOSTILE = "<script>alert(1)</script>"
RUN_PAGE = f"runs/r1/{REVIEW_PAGE}"
# Each card is one flat colour, so a screenshot shows whether it was drawn.
CARDS = {
    "amazon-main.png": ("cutout", None, (200, 200), (220, 40, 40)),
    "scene-oak-table-ebay-square.png": ("composite", "oak-table", (200, 200), (40, 160, 40)),
    "scene-beach-social-portrait.png": ("generate", "beach", (160, 200), (40, 40, 220)),
}


def _card(name: str, mode: str, template: str | None, size: tuple[int, int], **extra) -> dict:
    fmt = {"cutout": "amazon-main", "composite": "ebay-square", "generate": "social-portrait"}[mode]
    passed = mode != "generate"
    return {
        "file": f"runs/r1/cards/{name}" if name else None,
        "format": fmt,
        "width": size[0] * 10,
        "height": size[1] * 10,
        "kind": "cutout" if mode == "cutout" else "scene",
        "render": {"mode": mode},
        "compliance": {
            "format": fmt,
            "passed": passed,
            "checks": {"size": passed},
            "problems": [] if passed else [f"too small {HOSTILE}"],
        },
        "template": template,
        "prompt": f"a photo of olis mug on {template}" if template else None,
        "scores": {"identity": 0.81234, "prompt": 0.3},
        **extra,
    }


@pytest.fixture
def manifest(make_manifest) -> Manifest:
    """An SKU's run with three proposed cards, two rejected candidates, two photos (one refused) and one
    cutout with its original, whose title and notes carry a script."""
    base = make_manifest("sku1")
    cards = [_card(name, mode, template, size) for name, (mode, template, size, _) in CARDS.items()]
    cards += [
        _card("scene-beach-ebay-square-2.png", "generate", "beach", (200, 200))
        | {"status": "rejected", "reason": "identity 0.2 < 0.5", "format": "ebay-square"},
        _card("", "generate", "beach", (200, 200)) | {"status": "rejected", "reason": "ranked 3rd"},
    ]
    photo = {"sha256": "0" * 64, "bytes": 1, "format": "JPEG", "width": 300, "height": 240}
    data = base.model_dump(by_alias=True) | {
        "title": f"Mug {HOSTILE}",
        "notes": [f"note {HOSTILE}"],
        "inputs": {
            "photos": [{"file": "front.jpg", **photo}, {"file": "blank.jpg", **photo}],
            "problems": [{"file": "blank.jpg", "reason": "the photo is blank"}],
        },
        "cutouts": [{"file": "runs/r1/cutouts/front.png", "source": "front.jpg", "coverage": 0.4}],
        "originals": {"front.jpg": "runs/r1/originals/front.jpg"},
        "cards": cards,
    }
    data["lora"]["training"] |= {
        "loss_curve": "runs/r1/training/loss.png",
        "validation": ["runs/r1/training/validation/0.png"],
    }
    data["files"] = {f"runs/r1/cards/{name}": hashlib.sha256(name.encode()).hexdigest() for name in CARDS}
    return Manifest.model_validate(data)


@pytest.fixture
def decisions(manifest: Manifest) -> Decisions:
    """Approved with a hostile note; rejected, but the card changed since; the third not decided."""
    sha = manifest.files
    return Decisions(
        cards={
            "amazon-main.png": Decision(
                decision="approve", sha256=sha["runs/r1/cards/amazon-main.png"], note=f"good {HOSTILE}"
            ),
            "scene-oak-table-ebay-square.png": Decision(decision="reject", sha256="f" * 64),
        }
    )


class _Links(HTMLParser):
    """Every href and src of a page, and its elements by tag."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs if k in {"href", "src"}]


def _parse(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    return parser


def _rows(manifest: Manifest, decisions: Decisions) -> list[SkuRow]:
    return [
        SkuRow.from_manifest(manifest, decisions),
        SkuRow.from_manifest(
            manifest.model_copy(update={"sku": "sku2", "title": "Vase"}),
            contact_sheet="sku2/review/contact-sheet.jpg",
        ),
        SkuRow(sku="sku3", title=f"Bag {HOSTILE}", status="failed", error=f"no photos {HOSTILE}"),
        SkuRow(sku="sku4", status="skipped"),
    ]


def test_seller_text_is_escaped_and_every_link_is_relative(manifest, decisions):
    pages = {
        "sku": render_review_page(manifest, at=RUN_PAGE, decisions=decisions),
        "catalogue": render_catalogue_index("cat", _rows(manifest, decisions)),
    }
    for name, html in pages.items():
        parsed = _parse(html)
        assert "script" not in parsed.tags and "<script" not in html, name
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, name
        assert parsed.links, name
        bad = [link for link in parsed.links if link.startswith("/") or re.match(r"^[a-z]+:", link)]
        assert not bad, (name, bad)
    sku, catalogue = (_parse(pages[n]).links for n in ("sku", "catalogue"))
    # From runs/r1/review/index.html: the run's files are one folder up.
    assert "../cards/amazon-main.png" in sku and "../originals/front.jpg" in sku
    # The operator's files (the manifest: identifier, prompts, model; training curves) are not the seller's.
    assert not [link for link in sku if "manifest.json" in link or "training/" in link]
    # From review/index.html of the catalogue: SKU pages and cards are one folder up.
    assert "../sku1/review/index.html" in catalogue and "../sku1/runs/r1/cards/amazon-main.png" in catalogue
    assert "../sku2/review/contact-sheet.jpg" in catalogue
    assert "../sku2/runs/r1/cards/amazon-main.png" not in catalogue  # the contact sheet stands for them
    # The SKU's own copy of the page, one level higher, links one level less.
    assert 'href="../runs/r1/cards/amazon-main.png"' in render_review_page(manifest)


def test_the_sku_page_shows_each_card_with_its_decision_and_the_commands(manifest, decisions):
    html = render_review_page(manifest, at=RUN_PAGE, decisions=decisions)
    main, scene, generated = (html.index(f'id="card-{name}"') for name in CARDS)
    assert main < scene < generated
    approved = html[main:scene]
    assert "Approved: it goes live on Amazon at the next publish" in approved
    assert "good &lt;script&gt;" in approved
    assert "product-studio review cat sku1 --approve amazon-main.png" in approved
    assert "--reject amazon-main.png" in approved
    assert "--retry amazon-main.png" not in approved  # the seller's own photo cannot be made again
    assert "--retry" in html[scene:generated]
    assert "Changed since your decision: please look again" in html[scene:generated]
    assert "Waiting for you" in html[generated:]
    assert "Your photo, in a new scene: Oak table" in html
    assert "Made from your photos by the product model: Beach" in html and "<dd>0.812</dd>" in html
    assert "Meets Amazon&#39;s rules" in html and "The image is not the size Instagram/Facebook shops" in html
    assert "Not proposed: another try of this card looked better" in html
    assert 'blank.jpg<br><span class="check">Not used: the photo is blank' in html
    assert 'front.jpg<br><span class="good">Used</span>' in html
    # Without decisions (as publishing renders it) every card is waiting.
    assert render_review_page(manifest, at=RUN_PAGE).count(">Waiting for you<") == 3


def test_the_sku_page_speaks_to_sellers_not_operators(manifest, decisions):
    """Issue 35: no identifier, prompt, model, path or raw metric name on the seller's page; a card's
    quality in words by the thresholds it was judged by, the numbers only behind "Details"."""
    scores = {"identity_dino": 0.61, "identity_dino_max": 0.7, "prompt_clip": 0.12, "object_expansion": 0.2}
    gate = {"min_identity": 0.5, "min_prompt": 0.2}
    cards = [c.model_copy(update={"scores": scores, "gate": gate}) for c in manifest.cards]
    manifest = manifest.model_copy(update={"cards": cards})
    html = render_review_page(manifest, decisions=decisions)
    for internal in ("olis", "a photo of", manifest.base_model.id, "identity_dino", "prompt_clip",
                     "object_expansion", "algorithmicallyEnhanced", "trainedAlgorithmicMedia"):  # fmt: skip
        assert internal not in html, internal  # not even behind "Details"
    visible = re.sub(r"(?s)<details.*?</details>|<[^>]+>", " ", html)
    assert "Looks like your product" in visible and "Check that it matches the scene" in visible
    assert "Check your product&#39;s outline" in visible
    details = "".join(re.findall(r'(?s)<details class="numbers">.*?</details>', html))
    assert "scene match (CLIP text)" in details and "0.120" in details and "threshold: prompt" in details


def test_a_cutout_without_an_original_is_shown_alone(manifest):
    html = render_review_page(manifest.model_copy(update={"originals": {}}))
    assert 'alt="front.jpg, background removed"' in html and 'alt="front.jpg"' not in html


def test_the_catalogue_index_counts_decisions_and_shows_failures(manifest, decisions):
    rows = _rows(manifest, decisions)
    assert rows[0].decisions == {"pending": 2, "approved": 1, "rejected": 0, "retry": 0}  # stale: pending
    html = render_catalogue_index("cat", rows)
    assert "4 products" in html and "1 could not be made" in html
    assert html.count("new cards made for your review") == 2 and "unchanged since the last run" in html
    visible = re.sub(r"<[^>]+>", " ", html)
    assert "5  cards waiting for you" in visible and "published" not in visible  # proposed, not live
    assert "no photos &lt;script&gt;" in html


def test_a_page_that_decides_has_the_contract_s_buttons_and_embeds_its_urls_as_data(manifest, decisions):
    hostile = "?x=</script><script>alert(1)</script>"
    targets = decision_targets(
        manifest, decisions, put=lambda key: f"https://s3/{key}{hostile}", get=lambda key: f"https://s3/{key}"
    )
    writes = page_writes({"sku1": targets}, time.time() + 60)
    html = render_review_page(manifest, decisions=decisions, writes=writes)
    assert html.count("<script") == 2 and "<script>alert(1)" not in html  # the data script and the code
    data = re.search(r'<script type="application/json" id="decide-data">(.*?)</script>', html, re.S)
    assert json.loads(data.group(1)) == json.loads(json.dumps(writes))  # every URL intact, as data
    for name, (mode, *_) in CARDS.items():
        for verdict in ("approve", "reject", "retry"):
            button = f'data-sku="sku1" data-card="{name}" data-decision="{verdict}">'
            assert (button in html) == (verdict != "retry" or mode != "cutout"), (name, verdict)
        assert f'data-note-for="{name}"' in html
    states = dict(re.findall(r'data-card="([^"]+)" data-state="(\w+)"', html))
    # Approved; rejected but the card changed since (pending again); never decided.
    assert states == dict(zip(CARDS, ["approved", "pending", "pending"], strict=True))
    assert "Decide with:" not in html  # the buttons replace the commands
    assert 'data-approve-passing="sku1"' in html
    index = render_catalogue_index("cat", _rows(manifest, decisions), writes=writes)
    assert 'data-approve-passing="sku1"' in index and 'data-approve-passing="sku2"' not in index
    assert 'data-approve-passing="*"' in index  # the whole catalogue
    assert '<span class="n" data-sku="sku1" data-count="approved">1</span>' in index


@pytest.mark.parametrize("key", ["/sku1/review/index.html", "https://x/y.png", "../other/x.png", ""])
def test_a_row_refuses_keys_that_are_not_relative_to_the_catalogue(key):
    with pytest.raises(ValueError, match="not a key relative to the catalogue"):
        SkuRow(sku="s", status="published", page=key)


# --- in a browser -----------------------------------------------------------------------------------------

# Appended to a copy of a page, next to it: once everything has loaded, records the images that did not
# (lazy ones too) and how many scripts the page holds.
PROBE = """<script>
for (const img of document.images) img.loading = "eager";
window.addEventListener("load", () => {
  const broken = [...document.images].filter((i) => !i.complete || i.naturalWidth === 0);
  document.body.dataset.images = String(document.images.length);
  document.body.dataset.broken = JSON.stringify(broken.map((i) => i.getAttribute("src")));
  document.body.dataset.scripts = String(document.scripts.length);
});
</script>"""


def _browse(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
    ]
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=60, check=True)


def _image(path: Path, size: tuple[int, int], colour: tuple[int, ...], mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new(mode, size, colour)
    ImageDraw.Draw(image).ellipse((size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4), "white")
    image.save(path)


def _bucket(root: Path, manifest: Manifest, decisions: Decisions) -> dict[str, Path]:
    """The output bucket as a folder: one SKU's run, its pages, and the catalogue's index."""
    sku = root / "cat" / "sku1"
    for name, (_, _, size, colour) in CARDS.items():
        _image(sku / f"runs/r1/cards/{name}", size, colour)
    _image(sku / "runs/r1/cards/scene-beach-ebay-square-2.png", (200, 200), (120, 120, 120))
    _image(sku / "runs/r1/cutouts/front.png", (128, 128), (200, 120, 40, 0), "RGBA")
    _image(sku / "runs/r1/originals/front.jpg", (160, 128), (90, 90, 90))
    _image(sku / "runs/r1/training/loss.png", (320, 160), (250, 250, 250))
    _image(sku / "runs/r1/training/validation/0.png", (64, 64), (30, 30, 30))
    (sku / "manifest.json").write_bytes(manifest.to_json())
    sheet = contact_sheet([sku / f"runs/r1/cards/{name}" for name in CARDS], cell=96, labels=list(CARDS))
    (root / "cat/sku2/review").mkdir(parents=True)
    (root / "cat/sku2/review/contact-sheet.jpg").write_bytes(to_jpeg(sheet))
    pages = {
        "run": sku / RUN_PAGE,
        "sku": sku / REVIEW_PAGE,
        "catalogue": root / "cat" / REVIEW_PAGE,
    }
    html = {
        "run": render_review_page(manifest, at=RUN_PAGE, decisions=decisions),
        "sku": render_review_page(manifest, decisions=decisions),
        "catalogue": render_catalogue_index("cat", _rows(manifest, decisions)),
    }
    for name, path in pages.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html[name], encoding="utf-8")
    return pages


def _colour_share(screenshot: Path, colour: tuple[int, int, int]) -> float:
    """The share of a screenshot's pixels within a few levels of ``colour``."""
    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    return float((np.abs(pixels - np.array(colour)) <= 8).all(axis=-1).mean())


@pytest.mark.slow
def test_the_pages_load_every_image_and_run_no_script_in_chromium(manifest, decisions, tmp_path):
    chromium = system_chromium()
    pages = _bucket(tmp_path / "bucket", manifest, decisions)
    for name, page in pages.items():
        probe = page.with_name("probe.html")
        probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
        run = _browse(chromium, tmp_path / "profile", "--dump-dom", probe.as_uri())
        body = re.search(r"<body([^>]*)>", run.stdout)
        assert body, (name, run.stdout[:500])
        data = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
        assert data.get("images"), (name, "the probe did not run", run.stderr[-2000:])
        assert int(data["images"]) >= 4 and json.loads(data["broken"].replace("&quot;", '"')) == [], name
        assert data["scripts"] == "1", name  # the probe's own
        assert "Uncaught" not in run.stderr, (name, run.stderr[-2000:])  # no script error on the console
        assert "Mug &lt;script&gt;alert(1)&lt;/script&gt;" in run.stdout, name  # shown as text

    shots = {}
    for name in ("run", "catalogue"):
        shots[name] = tmp_path / f"{name}.png"
        _browse(
            chromium,
            tmp_path / "profile",
            f"--screenshot={shots[name]}",
            "--window-size=1280,2000",
            "--hide-scrollbars",
            pages[name].as_uri(),
        )
        with Image.open(shots[name]) as shot:
            assert shot.size == (1280, 2000)
    # The three cards are drawn on the SKU page; the thumbnails or contact sheet on the index.
    for _, _, _, colour in CARDS.values():
        assert _colour_share(shots["run"], colour) > 0.01, colour
        assert _colour_share(shots["catalogue"], colour) > 0.001, colour


def test_a_relit_card_is_shown_beside_the_sellers_photo_and_poor_photos_are_named(manifest):
    """Issue 36: a relit card says so in words and shows the seller's cutout beside the card's product at
    the same scale; photos to retake say why, and a set with too few views says so."""
    composite = next(c for c in manifest.cards if c.render.mode == "composite")
    lit = {"mode": "match", "requested": "match", "strength": 0.35, "sigma": 30.0, "gain": [0.8, 1.2]}
    render = composite.render.model_copy(update={"light": LightInfo(**lit), "shadow": "model"})
    product = ProductPlacement(cutout="runs/r1/cutouts/front.png", box=(500, 400, 1500, 1800))
    relit = composite.model_copy(update={"render": render, "product": product})
    kept = relit.model_copy(
        update={
            "file": "runs/r1/cards/kept.png",
            "render": render.model_copy(
                update={"light": LightInfo(mode="keep", requested="match", fallback="detail 0.5 < 0.9")}
            ),
        }
    )
    cutout = manifest.cutouts[0].model_copy(
        update={"preview": "runs/r1/cutouts/front.preview.png", "advice": [photo_advice.BLURRED]}
    )
    few = PhotoSetAdvice(usable_views=1, needed=3, retake=["front.jpg"])
    others = [c for c in manifest.cards if c is not composite]
    page = manifest.model_copy(
        update={"cards": [relit, kept, *others], "cutouts": [cutout], "photo_set": few}
    )
    html = render_review_page(page)
    visible = re.sub(r"<[^>]+>", " ", html)
    assert "Relit for the scene" in visible and "Shown in your photo&#39;s own light" in visible
    assert visible.count("Relit for the scene") == 1 and "detail 0.5" not in visible
    pair = re.search(r'(?s)<div class="relit">.*?On this card</figcaption></figure></div>', html).group(0)
    assert (
        'src="../runs/r1/cutouts/front.preview.png"' in pair
        and "cards/scene-oak-table-ebay-square.png" in pair
    )
    # The card's product framed as the cutout frames it: a 1000x1400 box in a 2000x2000 card.
    side = 1400 * 1.16
    assert f"background-size:{2000 / side * 100:.2f}% auto" in pair
    assert "Retake: it is blurred" in visible and "give 1 clear, different view of the product" in visible
    assert "retake front.jpg" in visible
