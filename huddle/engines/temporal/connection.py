"""Connecting to the Temporal service named in the settings, with one clear error when it is not there."""

from __future__ import annotations

import asyncio
import time

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from huddle.config.settings import Settings
from huddle.errors import HuddleError


class TemporalUnavailable(HuddleError):
    """No Temporal service answers at the configured address."""


CONNECT_WAIT_S = 15.0
"""How long to wait for the service to come up: a worker started right after ``huddle dev-server &`` finds it
starting (ready in ~1.5 s)."""


async def connect(settings: Settings) -> Client:
    where = settings.temporal
    deadline = time.monotonic() + CONNECT_WAIT_S
    while True:
        try:
            return await Client.connect(
                where.address, namespace=where.namespace, data_converter=pydantic_data_converter
            )
        except RuntimeError as exc:
            if time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                continue
            raise TemporalUnavailable(
                f"no Temporal service at temporal.address {where.address!r} ({exc}); start one with "
                "`huddle dev-server`, or set temporal.address in huddle.yaml"
            ) from None
