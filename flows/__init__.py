"""Prefect glue: each task one library call; the flows read like the stages.

Importing ``flows`` gives the library's settings Prefect's own cron parser, so a schedule Prefect would refuse
later (``0 0 * * 5L``) is refused with the other settings at start-up.
"""

from __future__ import annotations

from product_studio import settings as _settings


def _prefect_cron(expression: str) -> None:
    """Refuse a cron expression the way Prefect's ``CronSchedule`` does (a ValueError saying why)."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=expression)
    except ValidationError as exc:
        raise ValueError(exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")) from None


_settings.cron_check = _prefect_cron
