"""``product-studio`` commands of the seller's decisions and the cards they publish: review,
publish-approved, review-link, storage (the bucket's CORS rule), verify."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.cli.flags import valid_id
from product_studio.text import printable


def add_commands(sub) -> None:
    p = sub.add_parser("review", help="show an SKU's proposed cards and decisions, or record decisions")
    p.add_argument("catalogue_id", type=valid_id("catalogue"))
    p.add_argument("sku", type=valid_id("SKU"))
    p.add_argument("--approve", nargs="+", metavar="FILE", help="card file names to approve")
    p.add_argument("--reject", nargs="+", metavar="FILE", help="card file names to reject")
    p.add_argument("--retry", nargs="+", metavar="FILE", help="scene cards to make again (new seeds)")
    p.add_argument(
        "--note",
        default="",
        help="a note kept with every card decided in this command (one command per note)",
    )
    p.add_argument("--by", default="", help="who decides (default: the user name)")
    p.set_defaults(func=cmd_review)
    p = sub.add_parser("publish-approved", help="copy approved cards to the marketplace location")
    p.add_argument("catalogue_id", nargs="?", type=valid_id("catalogue"), help="one catalogue (default: all)")
    p.set_defaults(func=cmd_publish_approved)
    p = sub.add_parser(
        "review-link", help="print a presigned link to a review page where sellers decide (no credentials)"
    )
    p.add_argument("catalogue_id", type=valid_id("catalogue"))
    p.add_argument(
        "sku", nargs="?", type=valid_id("SKU"), help="one SKU's page (default: the catalogue's index)"
    )
    p.add_argument("--expires", default="1h", help="how long the link works: 90s, 15m, 1h, 7d (default 1h)")
    p.add_argument("--read-only", action="store_true", help="a view-only page: no buttons, it writes nothing")
    p.set_defaults(func=cmd_review_link)
    p = sub.add_parser("storage", help="the output bucket's CORS rule, for review pages on another origin")
    p.add_argument("action", choices=["cors"])
    p.add_argument("--origin", action="append", required=True, help="the pages' origin: https://host[:port]")
    p.set_defaults(func=cmd_storage)
    p = sub.add_parser("verify", help="print a card file's IPTC digital source type and C2PA credentials")
    p.add_argument("file", help="a card file, or s3://bucket/key")
    p.add_argument(
        "--trust-anchors", type=Path, help="PEM CAs to trust (default: the c2pa.trust_anchors setting)"
    )
    p.set_defaults(func=cmd_verify)


_SHOWN_SCORES = {"identity_dino", "prompt_clip", "sharpness"}


def cmd_review(args: argparse.Namespace) -> int:
    """Print an SKU's proposed cards with their decisions and scores, or record decisions."""
    import getpass

    from product_studio.manifest import now, read_published
    from product_studio.review import decisions
    from product_studio.settings import Settings

    output = Settings().store("output")
    manifest = read_published(output, args.catalogue_id, args.sku)
    if manifest is None:
        raise ValueError(f"SKU {args.catalogue_id}/{args.sku} has no published run to review")
    try:
        earlier = decisions.read_decisions(output, manifest)
    except decisions.DecisionsError as exc:
        shown = printable(str(exc), 2000)
        print(f"the current decisions file is not valid and will be replaced: {shown}", file=sys.stderr)
        earlier = None
    verdicts = decisions.verdicts_from(approve=args.approve, reject=args.reject, retry=args.retry)
    if verdicts:
        by = args.by or getpass.getuser()
        earlier = decisions.decide(manifest, verdicts, note=args.note, by=by, at=now(), earlier=earlier)
        print(f"wrote {decisions.write_decisions(output, manifest, earlier)}")
    for name, card, state, note in decisions.card_states(manifest, earlier):
        scores = " ".join(f"{k}={v:.3f}" for k, v in sorted(card.scores.items()) if k in _SHOWN_SCORES)
        note = f"  note: {printable(note)}" if note else ""  # seller text: no escape codes
        print(
            f"{state:8} {name}  {card.format} {card.width}x{card.height} {card.render.mode}  {scores}{note}"
        )
    return 0


def cmd_publish_approved(args: argparse.Namespace) -> int:
    from flows.publish_approved import publish_approved_flow
    from product_studio.settings import Settings

    Settings()  # a bad setting is said in one line before any flow (or Prefect server) starts
    results = publish_approved_flow(args.catalogue_id)
    for r in results:
        line = f"{r.status:11} {r.catalogue_id}/{r.sku}  live: {len(r.live)}"
        line += f", added {len(r.added)}" if r.added else ""
        line += f", removed {len(r.removed)}" if r.removed else ""
        line += f", retry: {' '.join(r.retry)}" if r.retry else ""
        print(line + (f"  {printable(r.error, 2000)}" if r.error else ""))
        for name, why in r.refused.items():
            print(f"            refused {printable(name)}: {printable(why, 2000)}")
        if r.retry_error:
            print(f"            {printable(r.retry_error, 2000)}")
    if not results:
        print("nothing to publish: no decisions or manifests changed since the last run")
    return 1 if any(r.status == "error" or r.refused or r.retry_error for r in results) else 0


def cmd_review_link(args: argparse.Namespace) -> int:
    from product_studio.review import links
    from product_studio.settings import Settings

    seconds = links.parse_expiry(args.expires)
    output = Settings().store("output")
    write = not args.read_only
    if args.sku:
        url = links.share_sku_page(output, args.catalogue_id, args.sku, seconds, write=write)
    else:
        url = links.share_catalogue_index(output, args.catalogue_id, seconds, write=write)
    what = "view the cards" if args.read_only else "approve, reject or retry cards"
    print(f"anyone with this link can {what} until it expires in {args.expires}:", file=sys.stderr)
    print(url)  # the last line: the shared page's URL
    return 0


def cmd_storage(args: argparse.Namespace) -> int:
    """``storage cors``: the output bucket's CORS rule for review pages served from another origin."""
    from product_studio.review.links import apply_page_cors
    from product_studio.settings import Settings

    output = Settings().store("output")
    rule = apply_page_cors(output, args.origin)
    print(f"{output.url()}: {', '.join(rule['AllowedOrigins'])} may GET and PUT with presigned URLs")
    return 0


def _file_bytes(where: str) -> bytes:
    """A local file's bytes, or an object's (``s3://bucket/key``, with boto3's credentials)."""
    if where.startswith("s3://"):
        from product_studio.storage import Location, Store

        location = Location.parse(where)
        return Store(f"s3://{location.bucket}").read(location.prefix)
    path = Path(where)
    if path.is_dir():
        raise ValueError(f"{where} is a directory: give one card file (product-studio verify FILE)")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {where}: {exc.strerror or exc}") from None


def cmd_verify(args: argparse.Namespace) -> int:
    """Print what a marketplace reads in a card file: its IPTC label and its C2PA credentials."""
    from product_studio.provenance.labelling import read_card
    from product_studio.settings import Settings

    anchors = args.trust_anchors.read_bytes() if args.trust_anchors else Settings().c2pa.anchors()
    reading = read_card(_file_bytes(args.file), anchors, where=args.file)
    label, c2pa = reading.label, reading.credentials
    print(f"digital source type: {label.digital_source_type if label else 'none'}")
    if label:
        print(f"iptc uri: {label.uri}")
        for name in ("generator", "ai_system", "base_model", "manifest"):
            if getattr(label, name):
                print(f"{name.replace('_', ' ')}: {printable(str(getattr(label, name)))}")
    print(
        f"c2pa: {c2pa.state}"
        + ("" if c2pa.state != "Valid" else " (intact; the signer is not a trust anchor)")
    )
    print(f"signer: {printable(c2pa.signer or 'none')}")
    if c2pa.digital_source_type:
        print(f"c2pa digital source type: {c2pa.digital_source_type}")
    for problem in reading.problems:
        print(f"problem: {printable(problem, 2000)}")
    return 1 if reading.problems else 0
