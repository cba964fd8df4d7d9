"""One metered question to one profile: what ``huddle ask`` runs, and the smallest end-to-end use of the stack."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from autogen_core.models import CreateResult, LLMMessage, SystemMessage, UserMessage

from huddle.config.settings import ModelProfile
from huddle.errors import HuddleError
from huddle.models.factory import build_client
from huddle.secrets import redact
from huddle.usage import UsageLedger, UsageRecord, usage_scope


async def ask(
    prompt: str,
    profile: ModelProfile,
    ledger_path: Path | str,
    *,
    system: str | None = None,
    run_id: str | None = None,
    on_chunk: Callable[[str], None] | None = None,
) -> tuple[str, UsageRecord]:
    """Send `prompt` to `profile`; stream chunks to `on_chunk` if given. Returns the answer and its ledger row.

    The call is recorded in the ledger at `ledger_path`. Server and connection failures become a `HuddleError` that
    names the profile and endpoint (with any credential masked).
    """
    import openai

    messages: list[LLMMessage] = [SystemMessage(content=system)] if system else []
    messages.append(UserMessage(content=prompt, source="user"))
    where = f"profile {profile.name!r} ({profile.model_name} at {profile.base_url or profile.provider})"
    ledger = UsageLedger(ledger_path)
    client = build_client(profile, ledger, agent="ask")
    result: CreateResult | None = None
    try:
        with usage_scope(run_id=run_id):
            if on_chunk is None:
                result = await client.create(messages)
            else:
                async for item in client.create_stream(messages):
                    if isinstance(item, CreateResult):
                        result = item
                    else:
                        on_chunk(item)
        if result is None:
            raise HuddleError(f"{where}: the reply stream ended without a final result")
        answer = result.content if isinstance(result.content, str) else str(result.content)
        return answer, ledger.records(run_id=run_id)[-1]
    except openai.OpenAIError as exc:
        raise HuddleError(f"{where}: {redact(str(exc))}") from None
    finally:
        await client.close()
        ledger.close()
