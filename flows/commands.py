"""``product-studio`` commands that run flows or read and write the buckets: catalogue, sku, review,
publish-approved, review-link, storage, verify, deployments, serve, settings, formats, templates."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_SHOWN_SCORES = {"identity_dino", "prompt_clip", "sharpness"}


def _outcomes(outcomes: list) -> int:
    for o in outcomes:
        line = f"{o.status:9} {o.catalogue_id}/{o.sku}"
        line += f"  {o.manifest}" if o.status == "published" else f"  {o.reason or o.error}"
        print(line)
        for p in o.problems:
            print(f"          photo not used: {p.reason}")
    return 0 if all(o.status != "failed" for o in outcomes) else 1


def cmd_catalogue(args: argparse.Namespace) -> int:
    from flows.catalogue import catalogue_flow

    state = catalogue_flow(args.catalogue_id, force=args.force, return_state=True)
    outcomes = state.result(raise_on_failure=False)  # a Failed run still carries every SKU's outcome
    if isinstance(outcomes, BaseException):
        raise outcomes
    return _outcomes(outcomes)


def cmd_sku(args: argparse.Namespace) -> int:
    from flows.sku import sku_flow

    state = sku_flow(args.catalogue_id, args.sku, force=args.force, return_state=True)
    if state.is_completed():
        return _outcomes([state.result()])
    # One line starting with the status word, on stdout like the other outcomes (error.json has the detail).
    print(f"failed    {args.catalogue_id}/{args.sku}  {state.result(raise_on_failure=False)}")
    return 1


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
        shown = decisions.printable(str(exc), 2000)
        print(f"the current decisions file is not valid and will be replaced: {shown}", file=sys.stderr)
        earlier = None
    verdicts = decisions.verdicts_from(approve=args.approve, reject=args.reject, retry=args.retry)
    if verdicts:
        by = args.by or getpass.getuser()
        earlier = decisions.decide(manifest, verdicts, note=args.note, by=by, at=now(), earlier=earlier)
        print(f"wrote {decisions.write_decisions(output, manifest, earlier)}")
    for name, card, state, note in decisions.card_states(manifest, earlier):
        scores = " ".join(f"{k}={v:.3f}" for k, v in sorted(card.scores.items()) if k in _SHOWN_SCORES)
        note = f"  note: {decisions.printable(note)}" if note else ""  # seller text: no escape codes
        print(
            f"{state:8} {name}  {card.format} {card.width}x{card.height} {card.render.mode}  {scores}{note}"
        )
    return 0


def cmd_publish_approved(args: argparse.Namespace) -> int:
    from flows.publish_approved import publish_approved_flow
    from product_studio.review.decisions import printable

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
    return Path(where).read_bytes()


def cmd_verify(args: argparse.Namespace) -> int:
    """Print what a marketplace reads in a card file: its IPTC label and its C2PA credentials."""
    from product_studio.provenance.labelling import read_card
    from product_studio.settings import Settings

    anchors = args.trust_anchors.read_bytes() if args.trust_anchors else Settings().c2pa.anchors()
    reading = read_card(_file_bytes(args.file), anchors)
    label, c2pa = reading.label, reading.credentials
    print(f"digital source type: {label.digital_source_type if label else 'none'}")
    if label:
        print(f"iptc uri: {label.uri}")
        for name in ("generator", "ai_system", "base_model", "manifest"):
            if getattr(label, name):
                print(f"{name.replace('_', ' ')}: {getattr(label, name)}")
    print(
        f"c2pa: {c2pa.state}"
        + ("" if c2pa.state != "Valid" else " (intact; the signer is not a trust anchor)")
    )
    print(f"signer: {c2pa.signer or 'none'}")
    if c2pa.digital_source_type:
        print(f"c2pa digital source type: {c2pa.digital_source_type}")
    for problem in reading.problems:
        print(f"problem: {problem}")
    return 1 if reading.problems else 0


def cmd_deployments(args: argparse.Namespace) -> int:
    from flows.deployments import DEPLOYMENTS, deploy, prefect_yaml
    from product_studio.settings import Settings

    settings = Settings()
    if args.deploy:
        pools = {"gpu": args.gpu_pool, "cpu": args.cpu_pool}
        for name in deploy(pools, settings.schedule_cron):
            print(f"deployed {name}")
        return 0
    text = prefect_yaml(settings.schedule_cron)
    if args.write:
        Path(args.write).write_text(text)
        print(f"wrote {args.write} ({len(DEPLOYMENTS)} deployments)")
    else:
        print(text, end="")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.serve import main

    main()
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from product_studio.settings import Settings

    print(json.dumps(Settings().model_dump(mode="json"), indent=2))
    return 0


def cmd_formats(args: argparse.Namespace) -> int:
    from product_studio.cards.formats import ALIASES, FORMATS

    for f in FORMATS.values():
        aliases = [old for old, new in ALIASES.items() if new == f.id]
        print(
            f"{f.id}  {f.width}x{f.height}  {f.kind}  {f.marketplace}: {f.title}"
            + (f"  (old id: {', '.join(aliases)})" if aliases else "")
        )
    return 0


def cmd_templates(args: argparse.Namespace) -> int:
    from product_studio.rendering import scenes
    from product_studio.settings import Settings

    if args.action == "check":
        folder = args.folder or Settings().templates_dir
        problems = scenes.check_library(folder)
        if not problems and args.base_model:
            from product_studio.models import load_pipeline

            tokenizer = load_pipeline(args.base_model).tokenizer
            problems += scenes.prompt_length_problems(list(scenes.load_library(folder).values()), tokenizer)
        for problem in problems:
            print(problem)
        print(f"{folder}: {'ok' if not problems else f'{len(problems)} problem(s)'}", file=sys.stderr)
        return 1 if problems else 0
    settings = Settings()
    for t in scenes.load_library(settings.templates_dir, settings.extra_templates_dir).values():
        print(f"{t.id}  {t.mode}  {t.title}  suits: {', '.join(t.suits)}")
    return 0
