"""Span names and attribute names on OpenTelemetry's GenAI semantic conventions, in one place.

Code that traces says what happened in huddle's words (``agent=``, ``prompt_tokens=``, ``cost_usd=``); this module
names it as observability tools expect: model calls are ``chat {model}`` spans with ``gen_ai.request.model`` and
``gen_ai.usage.input_tokens``/``output_tokens``, tool calls ``execute_tool {tool}`` with ``gen_ai.tool.name``, agent
turns ``invoke_agent {agent}`` with ``gen_ai.agent.name``. Everything the conventions do not name (cost, policy,
budget decisions, stop reasons) keeps its name under ``huddle.``. Tokens are ``gen_ai.usage.*`` on model spans only:
a run or agent span carrying them too would be counted twice by tools that sum a trace's spans.

Conventions: https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/ (gen_ai.* names as of semconv 1.37).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# What each kind of span is, as ``gen_ai.operation.name``; kinds not listed are huddle's own (run, decision, budget).
OPERATIONS = {"model": "chat", "tool": "execute_tool", "agent": "invoke_agent"}

# huddle's keyword -> the convention's attribute, per span kind ("*": every kind).
_NAMES: dict[str, dict[str, str]] = {
    "*": {"agent": "gen_ai.agent.name"},
    "model": {
        "model": "gen_ai.request.model",
        "response_model": "gen_ai.response.model",
        "provider": "gen_ai.provider.name",
        "prompt_tokens": "gen_ai.usage.input_tokens",
        "completion_tokens": "gen_ai.usage.output_tokens",
        "cached_tokens": "gen_ai.usage.cache_read.input_tokens",
        "reasoning_tokens": "gen_ai.usage.reasoning.output_tokens",
        "finish_reason": "gen_ai.response.finish_reasons",
    },
    "tool": {"tool": "gen_ai.tool.name", "call_id": "gen_ai.tool.call.id"},
}

# huddle's provider names -> gen_ai.provider.name values (the conventions' well-known ones where there is one).
PROVIDERS = {"openai": "openai", "local": "llama_cpp", "scripted": "huddle.scripted"}

KIND = "huddle.kind"
RUN_ID = "huddle.run_id"


def attribute_name(kind: str, key: str) -> str:
    """The exported name of huddle's attribute `key` on a span of `kind`."""
    return _NAMES.get(kind, {}).get(key) or _NAMES["*"].get(key) or f"huddle.{key}"


def attributes(kind: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """huddle's keywords as exported attributes; None values are left out (OpenTelemetry has no null)."""
    named = {attribute_name(kind, key): value for key, value in values.items() if value is not None}
    if "gen_ai.provider.name" in named:
        named["gen_ai.provider.name"] = PROVIDERS.get(named["gen_ai.provider.name"], named["gen_ai.provider.name"])
    return named


def span_name(kind: str, subject: str) -> str:
    """``chat gpt-4o-mini``, ``execute_tool calculator``, ``invoke_agent planner``; other kinds ``{kind} {subject}``."""
    return f"{OPERATIONS.get(kind, kind)} {subject}"
