"""Approval decisions as the serve surfaces receive them, and a paused turn as text for clients that only read text.

Every surface takes the same decisions to `Hub.approve` but receives them its own way: the approve endpoint and
A2A as JSON (``{"<call id>": {"action": "approve" | "deny" | "edit", "reason": ..., "args": {...}}}``), the OpenAI
endpoints and A2A as a plain reply (``approve``, ``yes``, ``deny too expensive``). Parsing them once here keeps the
rules (what counts as a yes, which calls a reply decides, what a mistake says) the same everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from huddle.agents.approval import ApprovalDecision, PendingCall
from huddle.secrets import redact
from huddle.serve.hub import DecisionsRefused

WAITING = "Waiting for your approval: "
"""How the text answer of a paused turn begins (a stateless client's resent history is recognised by it)."""
YES = frozenset({"approve", "approved", "yes", "y"})
NO = frozenset({"deny", "denied", "no", "n"})
_ARGS_CHARS = 200


def decisions_from(raw: Any, where: str = "decisions") -> dict[str, ApprovalDecision]:
    """``{"<call id>": {"action", "reason", "args"}}`` as decisions (made through the server); a mistake is one
    `DecisionsRefused` naming the field."""
    if not isinstance(raw, Mapping) or not raw:
        raise DecisionsRefused(f"{where}: expected an object mapping each pending call's id to a decision")
    decisions = {}
    for call_id, body in raw.items():
        if not isinstance(body, Mapping):
            raise DecisionsRefused(f"{where}.{call_id}: expected {{'action': 'approve' | 'deny' | 'edit', ...}}")
        try:
            decision = ApprovalDecision.model_validate({**body, "by": "serve"})
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise DecisionsRefused(f"{where}.{call_id}.{field}: {first['msg']}") from None
        if decision.action == "edit" and decision.args is None:
            raise DecisionsRefused(f"{where}.{call_id}.args: an edit needs the new arguments")
        if decision.action == "deny" and not decision.reason:
            decision = ApprovalDecision.deny(by="serve")
        decisions[str(call_id)] = decision
    return decisions


def reply_decisions(text: str, pending: list[PendingCall]) -> dict[str, ApprovalDecision] | None:
    """The decisions a plain reply makes: ``approve`` / ``yes`` / ``y`` (any case) approves, ``deny`` / ``no`` /
    ``n`` denies, with the rest of the line as the reason; a pending call's id right after the word decides that
    call alone, else every pending call. None when the reply is anything else (a new message)."""
    words = text.strip().split(maxsplit=1)
    if not words or not pending:
        return None
    verb, rest = words[0].lower().rstrip(".!,:"), words[1].strip() if len(words) > 1 else ""
    if verb not in YES | NO:
        return None
    ids = [call.id for call in pending]
    chosen = ids
    first, _, after = rest.partition(" ")
    if first.strip("[]") in ids:
        chosen, rest = [first.strip("[]")], after.strip()
    elif verb in YES and rest:
        return None  # "yes, but only half": not a plain approval
    if verb in YES:
        return {call_id: ApprovalDecision.approve(by="serve") for call_id in chosen}
    return {call_id: ApprovalDecision.deny(rest, by="serve") for call_id in chosen}


def waiting_text(pending: list[dict[str, Any]]) -> str:
    """What a text-only client is answered while calls wait: each call with its arguments and id, and how to reply."""
    calls = "; ".join(f"{_call(p)} [call {p.get('id')}]" for p in pending)
    return redact(f"{WAITING}{calls}. Reply 'approve' or 'deny <reason>'.")


def _call(pending: dict[str, Any]) -> str:
    args = json.dumps(pending.get("args", {}), ensure_ascii=False)
    if len(args) > _ARGS_CHARS:
        args = args[: _ARGS_CHARS - 1] + "…"
    return f"{pending.get('tool')}({args})"
