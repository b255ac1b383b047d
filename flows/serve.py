"""Prefect deployments: the scheduled scan, the catalogue flow and the single-SKU flow.

``product-studio serve`` runs them in this process (a long-running worker). For GPU workers on
Kubernetes use ``infra/prefect.yaml`` with a work pool instead.
"""

from __future__ import annotations

from prefect import serve

from flows.catalogue import catalogue_flow, new_catalogues_flow
from flows.sku import sku_flow
from product_studio.settings import Settings


def deployments(settings: Settings | None = None) -> list:
    settings = settings or Settings()
    return [
        new_catalogues_flow.to_deployment(name="scheduled", cron=settings.schedule_cron),
        catalogue_flow.to_deployment(name="manual"),
        sku_flow.to_deployment(name="manual"),
    ]


def main() -> None:
    serve(*deployments())
