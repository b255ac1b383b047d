"""Every ``product-studio`` command's ``--help``: its one-line description and an example to copy."""

from __future__ import annotations

import argparse

EXAMPLES = {
    "tiny-model": "product-studio tiny-model .demo/tiny-sd --family sd",
    "tiny-encoders": "product-studio tiny-encoders .demo/encoders",
    "sample-catalogue": "product-studio sample-catalogue demo-catalogue --create-bucket",
    "train": "product-studio train photos/teapot --class-noun teapot --out lora/teapot --steps 400",
    "eval": "product-studio eval dreambench/dataset --out eval/run1 --subjects backpack,can",
    "catalogue": "product-studio catalogue spring-2027",
    "sku": "product-studio sku spring-2027 teapot-teal --force",
    "deployments": "product-studio deployments --write infra/prefect.yaml",
    "serve": "PRODUCT_STUDIO_SCHEDULE_CRON='*/15 * * * *' product-studio serve",
    "formats": "product-studio formats list",
    "templates": "product-studio templates check my-templates/",
    "settings": "PRODUCT_STUDIO_OUTPUT=s3://results product-studio settings",
    "review": "product-studio review spring-2027 teapot-teal --approve amazon-main.jpg --note 'great'",
    "publish-approved": "product-studio publish-approved spring-2027",
    "review-link": "product-studio review-link spring-2027 teapot-teal --expires 7d",
    "storage": "product-studio storage cors --origin https://reviews.example.com",
    "verify": "product-studio verify s3://marketplace/spring-2027/teapot-teal/amazon-main/1.jpg",
}

DETAILS = {
    "review-link": "The page's buttons write each card's decision with presigned PUT URLs that can write "
    "only that card's decision object; --read-only makes a view-only copy. The last line is the page's URL.",
    "serve": "Without PREFECT_API_URL it starts a local Prefect server (whose scheduler fires the schedule) "
    "and stops it on exit; with it, that server schedules the runs.",
}


class _KeepExamples(argparse.HelpFormatter):
    """Wraps descriptions as usual but keeps the example's lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def describe(sub: argparse._SubParsersAction) -> None:
    """Give each command its summary line as description (plus any details) and an example epilog."""
    summaries = {action.dest: action.help for action in sub._choices_actions}
    for name, parser in sub.choices.items():
        summary = summaries.get(name) or ""
        parser.description = parser.description or " ".join(
            part for part in (summary[:1].upper() + summary[1:] + ".", DETAILS.get(name, "")) if part
        )
        if name in EXAMPLES:
            parser.epilog = f"example:\n  {EXAMPLES[name]}"
            parser.formatter_class = _KeepExamples
