"""Review: a static HTML page per SKU that a seller opens straight from the bucket (relative links only)."""

from __future__ import annotations

import posixpath
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from product_studio.manifest import Manifest
    from product_studio.records import CardRecord


def _scores(scores: dict[str, float]) -> str:
    return "".join(f"<li>{escape(k)}: {v:.3f}</li>" for k, v in sorted(scores.items()))


_MODES = {
    "cutout": "your real product photo",
    "composite": "your real product, generated surroundings",
    "generate": "generated from the product model",
}


def _made(card: CardRecord) -> str:
    text = _MODES[card.render.mode]
    return text + (f": {escape(card.template)}" if card.template else "")


def _compliance(card: CardRecord) -> str:
    if card.compliance.passed:
        return f"<span class=ok>meets {escape(card.compliance.format)}'s rules</span>"
    return (
        f"<span class=bad>breaks {escape(card.compliance.format)}'s rules: "
        + escape("; ".join(card.compliance.problems))
        + "</span>"
    )


def render_review_page(manifest: Manifest, at: str = "review/index.html") -> str:
    """HTML for the page at key ``at`` (relative to the SKU); every link is relative to the page.

    The page opens from the bucket, a synced folder or a static website: it never names an absolute URL.
    """

    def link(key: str) -> str:
        return escape(posixpath.relpath(key, posixpath.dirname(at)))

    cards = "\n".join(
        f"""<figure><a href="{link(c.file)}"><img src="{link(c.file)}" alt="{escape(c.format)}"
 loading="lazy"></a><figcaption><b>{escape(c.format)}</b> {c.width}x{c.height}
 ({_made(c)})<br>{_compliance(c)}
 <ul>{_scores(c.scores)}</ul>{"<small>" + escape(c.prompt) + "</small>" if c.prompt else ""}
 </figcaption></figure>"""
        for c in manifest.cards
        if c.status == "published"
    )
    rejected = "\n".join(
        f"""<figure class=rejected>{f'<img src="{link(c.file)}" alt="{escape(c.format)}" loading="lazy">' if c.file else ""}
 <figcaption><b>{escape(c.format)}</b> ({_made(c)})<br><span class=bad>not published: {escape(c.reason or "")}</span>
 <ul>{_scores(c.scores)}</ul></figcaption></figure>"""
        for c in manifest.cards
        if c.status == "rejected"
    )
    notes = "".join(f"<p class=bad>{escape(n)}</p>" for n in manifest.notes)
    refused = {p.file for p in manifest.inputs.problems}  # downloaded, then refused by background removal
    inputs = "\n".join(
        f"<tr><td>{escape(p.file)}</td><td>used</td><td>{p.width}x{p.height} {escape(p.format)}</td></tr>"
        for p in manifest.inputs.photos
        if p.file not in refused
    ) + "\n".join(
        f"<tr class=bad><td>{escape(p.file)}</td><td>not used</td><td>{escape(p.reason)}</td></tr>"
        for p in manifest.inputs.problems
    )
    cutouts = "".join(
        f'<img class=thumb src="{link(c.file)}" alt="{escape(c.source)}">' for c in manifest.cutouts
    )
    training = manifest.lora.training
    renders = "".join(
        f'<img class=thumb src="{link(f)}" alt="validation render">' for f in training.validation
    )
    training_html = (
        f'<h2>Training</h2><p><img src="{link(training.loss_curve)}" alt="loss curve"></p><div>{renders}</div>'
        if training.loss_curve
        else ""
    )
    title = escape(manifest.title or manifest.sku)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Review: {title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;max-width:1200px;color:#222}}
.cards{{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:1rem}}
figure{{margin:0;border:1px solid #ddd;border-radius:8px;padding:.5rem;background:#fafafa}}
figure img{{width:100%;height:auto;display:block;background:#fff}}
.thumb{{width:120px;height:120px;object-fit:contain;background:repeating-conic-gradient(#eee 0 25%,#fff 0 50%) 0 0/16px 16px;margin:.25rem}}
table{{border-collapse:collapse}}td{{border-bottom:1px solid #eee;padding:.25rem .75rem}}.bad{{color:#a00}}.ok{{color:#070}}
small{{color:#666;display:block}}
</style></head><body>
<h1>{title}</h1>
<p>SKU <code>{escape(manifest.sku)}</code> in catalogue <code>{escape(manifest.catalogue_id)}</code> &middot;
class <b>{escape(manifest.class_noun)}</b> &middot; identifier <code>{escape(manifest.identifier)}</code> &middot;
base model <code>{escape(manifest.base_model.id)}</code></p>
<h2>Cards</h2>{notes}<div class="cards">{cards}</div>
{f'<h2>Not published</h2><p>Candidates that scored below the thresholds or ranked below the best, with their scores.</p><div class="cards">{rejected}</div>' if rejected else ""}
<h2>Your photos after background removal</h2><div>{cutouts}</div>
<h2>Your photos</h2><table>{inputs}</table>
{training_html}
<p><small>Generated {escape(manifest.created)} by product-studio {escape(manifest.versions.get("product_studio", "?"))}.
The full record is in <a href="{link("manifest.json")}">manifest.json</a>.</small></p>
</body></html>
"""
