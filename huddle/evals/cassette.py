"""Cassettes: record every model request and response of a run, and serve them back later with no model at all.

A cassette plugs into a team through ``GroupChatTeam(wrap_client=cassette.wrap)``, so it sits under the metering,
budget and cache layers, at the provider's client: everything the team asks a model, from any agent, goes through
it. Recording passes each call on and keeps the request and the response; replaying answers from the recording and
never calls the model, so a suite recorded once against a real model runs offline, deterministically and for free.

A request is identified by the agent that makes it and the whole request (messages, tools, tool choice, output
schema, extra arguments), except the ids of calls that waited for approval, which every run draws afresh. A request
the recording does not have is not guessed at: it raises `CassetteMiss`, which names the agent and the first message
that differs from the closest recorded request, and the cassette keeps every miss so that a runner can fail the
trial loudly even when the team itself survives a failing member.

Identical requests (the same scenario, trial after trial) are served in the order they were recorded, within the
`cassette_scope` that was active while recording (the scenario runner opens one per trial), so that a model's
different answers in different trials replay faithfully. Replayed calls carry the token counts the recording
reported, so the ledger shows what the recorded run cost; nothing is sent and nothing is spent.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel, Field, ValidationError
from pydantic_core import to_jsonable_python

from huddle.config.settings import ModelProfile
from huddle.errors import ConfigError, HuddleError
from huddle.models.delegating import DelegatingClient
from huddle.tools.results import redact_value

CASSETTE_VERSION = 1
# Where a replayed openai-compatible profile "points": the discard port, never contacted (no key needed, no network).
_NOWHERE = "http://127.0.0.1:9/v1"
_SNIPPET = 70
Mode = Literal["record", "replay"]

_scope: ContextVar[str] = ContextVar("huddle_cassette_scope", default="")


@contextmanager
def cassette_scope(name: str) -> Iterator[str]:
    """Label the calls made in this context (e.g. one scenario trial), so replay serves each trial its own answers."""
    token = _scope.set(name)
    try:
        yield name
    finally:
        _scope.reset(token)


class CassetteMiss(HuddleError):
    """A replayed request is not in the cassette; the message names the agent and the first differing message."""

    def __init__(self, message: str, *, agent: str, scope: str) -> None:
        super().__init__(message)
        self.agent = agent
        self.scope = scope


class Entry(BaseModel):
    """One recorded call: who asked, what exactly, and what came back (with the streamed chunks, if streamed)."""

    agent: str
    scope: str = ""
    profile: str
    key: str
    request: dict[str, Any]
    response: dict[str, Any]
    chunks: list[str] | None = None


class CassetteFile(BaseModel):
    """A cassette on disk: the profiles the recording used (no keys: profiles name variables) and the calls."""

    version: int = CASSETTE_VERSION
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    entries: list[Entry] = Field(default_factory=list)


def request_record(
    messages: Sequence[LLMMessage],
    *,
    tools: Sequence[Tool | ToolSchema] = (),
    tool_choice: Tool | str = "auto",
    json_output: bool | type[BaseModel] | None = None,
    extra_create_args: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A request as plain JSON data: what identifies it in a cassette and what a miss is compared against."""
    if isinstance(json_output, type):
        output: Any = {"model": json_output.__name__, "schema": json_output.model_json_schema()}
    else:
        output = json_output
    return {
        "messages": [to_jsonable_python(message, fallback=repr) for message in messages],
        "tools": [to_jsonable_python(t.schema if isinstance(t, Tool) else t, fallback=repr) for t in tools],
        "tool_choice": tool_choice.name if isinstance(tool_choice, Tool) else tool_choice,
        "json_output": output,
        "extra_create_args": to_jsonable_python(dict(extra_create_args or {}), fallback=repr),
    }


_APPROVAL_CALL_ID = re.compile(r"\bcall_[0-9a-f]{10}\b")
"""A pending call's id (`huddle.agents.approval.pending_call`): fresh in every run, so not part of a request's key."""


def request_key(agent: str, request: Mapping[str, Any]) -> str:
    """A stable digest of the agent and the whole request, approval call ids aside (a paused call's "waiting" line
    names its id, which differs between the recording and the replay)."""
    canonical = json.dumps({"agent": agent, "request": request}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(_APPROVAL_CALL_ID.sub("call_*", canonical).encode()).hexdigest()


class Cassette:
    """Recorded model calls; `wrap` is a ``ClientWrapper`` for `GroupChatTeam`/`build_client`.

    Build one with `Cassette.record(path)` (then `save()` when done) or `Cassette.replay(path)`.
    """

    def __init__(self, path: Path, mode: Mode, data: CassetteFile | None = None) -> None:
        self.path = path
        self.mode: Mode = mode
        self.data = data or CassetteFile()
        self.misses: list[CassetteMiss] = []
        self._lock = threading.Lock()
        self._served: dict[tuple[str, str], int] = {}
        self._by_key: dict[str, list[Entry]] = {}
        for entry in self.data.entries:
            self._by_key.setdefault(entry.key, []).append(entry)

    @classmethod
    def record(cls, path: Path) -> Cassette:
        """An empty cassette that records into `path` on `save()` (an existing file is replaced)."""
        return cls(Path(path), "record")

    @classmethod
    def replay(cls, path: Path) -> Cassette:
        """The cassette at `path`, to serve its recorded calls; a missing or malformed file is a `ConfigError`."""
        path = Path(path)
        try:
            data = CassetteFile.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such cassette (record one with --record {path})") from None
        except (OSError, ValidationError, ValueError) as exc:
            raise ConfigError(f"{path}: not a huddle cassette ({str(exc).splitlines()[0]})") from None
        if data.version != CASSETTE_VERSION:
            raise ConfigError(f"{path}: cassette version {data.version}, this huddle reads {CASSETTE_VERSION}")
        return cls(path, "replay", data)

    # -- the wrapper --------------------------------------------------------------------------------------------------

    def wrap(self, client: ChatCompletionClient, profile: ModelProfile, agent: str) -> ChatCompletionClient:
        """The ``ClientWrapper``: `client` with every call recorded (record) or answered from the cassette (replay)."""
        if self.mode == "record":
            with self._lock:
                self.data.profiles[profile.name] = profile.model_dump(mode="json", exclude={"name"})
        return CassetteClient(self, client, profile, agent)

    def stand_in_profiles(self) -> dict[str, ModelProfile]:
        """The recorded profiles, made safe to build with no key and no server, for the settings of a replay.

        They keep provider, model, price and capabilities, so every agent builds the same kind of client and sends
        the same requests as when recording; an openai-compatible one points at a port nobody listens on, since the
        cassette answers instead.
        """
        stand_ins = {}
        for name, fields in self.data.profiles.items():
            profile = ModelProfile.model_validate({**fields, "name": name, "fallback": None, "max_retries": 0})
            if profile.provider == "openai":
                profile = profile.model_copy(update={"base_url": _NOWHERE})
            stand_ins[name] = profile
        return stand_ins

    def save(self) -> None:
        """Write the recording (only in record mode); the file is replaced atomically.

        Every string is masked (`redact_value`) on the way out: a key the user pasted into a prompt would otherwise
        sit in a file made to be committed and shared. Entries are still found by their digest of the unmasked
        request, so a masked cassette replays the same calls.
        """
        if self.mode != "record":
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        with self._lock:
            masked = redact_value(self.data.model_dump(mode="json"))
            partial.write_text(json.dumps(masked, indent=1) + "\n", encoding="utf-8")
        partial.replace(self.path)

    def misses_in(self, scope: str) -> list[CassetteMiss]:
        """The misses of one scope (e.g. one trial)."""
        return [miss for miss in self.misses if miss.scope == scope]

    # -- storage ------------------------------------------------------------------------------------------------------

    def add(self, entry: Entry) -> None:
        with self._lock:
            self.data.entries.append(entry)
            self._by_key.setdefault(entry.key, []).append(entry)

    def find(self, agent: str, key: str, request: dict[str, Any]) -> Entry:
        """The recorded entry for this request, in recording order within the current scope; else a loud miss.

        The miss is raised and also kept in `misses`, since the agent that made the call may survive the error.
        """
        scope = _scope.get()
        with self._lock:
            found = self._by_key.get(key, [])
            own = [e for e in found if e.scope == scope] or found
            if own:
                served = self._served.get((scope, key), 0)
                self._served[(scope, key)] = served + 1
                return own[min(served, len(own) - 1)]
            miss = CassetteMiss(self._describe_miss(agent, scope, request), agent=agent, scope=scope)
            self.misses.append(miss)
        raise miss

    def _describe_miss(self, agent: str, scope: str, request: dict[str, Any]) -> str:
        where = f"cassette {self.path}: agent {agent!r}" + (f" ({scope})" if scope else "")
        candidates = [e for e in self.data.entries if e.agent == agent]
        if not candidates:
            agents = sorted({e.agent for e in self.data.entries}) or ["none"]
            return f"{where}: no request of this agent was recorded (recorded agents: {', '.join(agents)}); re-record"
        closest = max(
            candidates, key=lambda e: (*_closeness(e.request["messages"], request["messages"]), e.scope == scope)
        )
        return f"{where}: request not in the cassette; {_first_difference(closest.request, request)}; re-record it"


class CassetteClient(DelegatingClient):
    """A provider client seen through a cassette: records its calls, or replays them without calling it."""

    def __init__(self, cassette: Cassette, inner: ChatCompletionClient, profile: ModelProfile, agent: str) -> None:
        super().__init__(inner)
        self.cassette = cassette
        self.profile = profile
        self.agent = agent

    def _request(
        self,
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
        tool_choice: Tool | str,
        json_output: bool | type[BaseModel] | None,
        extra_create_args: Mapping[str, Any],
    ) -> tuple[dict[str, Any], str]:
        request = request_record(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
        )
        return request, request_key(self.agent, request)

    def _keep(self, key: str, request: dict[str, Any], result: CreateResult, chunks: list[str] | None) -> None:
        self.cassette.add(
            Entry(
                agent=self.agent,
                scope=_scope.get(),
                profile=self.profile.name,
                key=key,
                request=request,
                response=result.model_dump(mode="json"),
                chunks=chunks,
            )
        )

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        request, key = self._request(messages, tools, tool_choice, json_output, extra_create_args)
        if self.cassette.mode == "replay":
            return CreateResult.model_validate(self.cassette.find(self.agent, key, request).response)
        result = await self.inner.create(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
        )
        self._keep(key, request, result, None)
        return result

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[str | CreateResult, None]:
        request, key = self._request(messages, tools, tool_choice, json_output, extra_create_args)
        if self.cassette.mode == "replay":
            entry = self.cassette.find(self.agent, key, request)
            result = CreateResult.model_validate(entry.response)
            chunks = entry.chunks
            if chunks is None:  # recorded by create(), replayed as a stream: the whole text in one chunk
                chunks = [result.content] if isinstance(result.content, str) else []
            for chunk in chunks:
                yield chunk
            yield result
            return
        seen: list[str] = []
        async for item in self.inner.create_stream(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
            **kwargs,
        ):
            if isinstance(item, CreateResult):
                self._keep(key, request, item, seen)
            else:
                seen.append(item)
            yield item


def _common_prefix(recorded: Sequence[Any], current: Sequence[Any]) -> int:
    """How many leading messages two requests share."""
    count = 0
    for a, b in zip(recorded, current, strict=False):
        if a != b:
            break
        count += 1
    return count


def _closeness(recorded: Sequence[Any], current: Sequence[Any]) -> tuple[int, int]:
    """Shared leading messages, then shared leading characters of the first message that differs."""
    same = _common_prefix(recorded, current)
    if same >= min(len(recorded), len(current)):
        return same, 0
    return same, _common_chars(_text(recorded[same]), _text(current[same]))


def _common_chars(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _first_difference(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """Where a request first departs from a recorded one: a message (with the text around the change) or a field."""
    old, new = recorded["messages"], current["messages"]
    index = _common_prefix(old, new)
    if index < len(old) and index < len(new):
        role = new[index].get("type", "message")
        old_text, new_text = _text(old[index]), _text(new[index])
        at = _common_chars(old_text, new_text)
        start = max(0, at - _SNIPPET // 2)
        return (
            f"first differing message: #{index} ({role}) at character {at}: recorded "
            f"{old_text[start : at + _SNIPPET]!r}, now {new_text[start : at + _SNIPPET]!r}"
        )
    if len(old) != len(new):
        return f"the request has {len(new)} messages where the recording has {len(old)} (first {index} equal)"
    field = next(
        (f for f in ("tools", "tool_choice", "json_output", "extra_create_args") if recorded.get(f) != current.get(f)),
        "request",
    )
    return f"the messages are the same but {field} differs"


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else json.dumps(content, sort_keys=True)
