"""Connecting to the Temporal service named in the settings, with one clear error when it is not there."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from huddle.config.settings import Settings
from huddle.errors import HuddleError


class TemporalUnavailable(HuddleError):
    """No Temporal service answers at the configured address."""


async def connect(settings: Settings) -> Client:
    where = settings.temporal
    try:
        return await Client.connect(where.address, namespace=where.namespace, data_converter=pydantic_data_converter)
    except RuntimeError as exc:
        raise TemporalUnavailable(
            f"no Temporal service at temporal.address {where.address!r} ({exc}); start one with "
            "`huddle dev-server`, or set temporal.address in huddle.yaml"
        ) from None
