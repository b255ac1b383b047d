"""``product-studio serve``: every deployment (``flows.deployments``) served by this one process.

For a single machine without work pools: runs start here, and a catalogue runs its SKUs here one by one
(no fan-out). For GPU workers use the work pools (``infra/prefect.yaml``, ``make pool-demo``).
"""

from __future__ import annotations

from prefect import serve
from prefect.flows import load_flow_from_entrypoint

from flows.deployments import DEPLOYMENTS, REPO
from product_studio.settings import Settings


def deployments(settings: Settings | None = None) -> list:
    settings = settings or Settings()
    served = []
    for d in DEPLOYMENTS:
        flow = load_flow_from_entrypoint(str(REPO / d.entrypoint))
        cron = settings.schedule_cron if d.cron else None
        served.append(flow.to_deployment(name=d.name, cron=cron, description=d.description))
    return served


def main() -> None:
    serve(*deployments())
