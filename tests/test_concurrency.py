"""Many sessions in one process at once: shared ledger, shared memory store, shared embedded model — and nothing of
one session reaching another.

Every session's task carries a marker (``[S7]``). The scripted server answers with the marker(s) it was sent, so a
request that mixed two sessions' context, an answer that reached the wrong session, or a call metered under the wrong
run or session shows up as a marker where it does not belong.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from huddle.config.settings import Settings, load_settings
from huddle.memory.store import VectorMemory
from huddle.teams.base import RunResult, Team, build_team
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.kinds import PatternSpec
from huddle.teams.spec import TeamSpec
from huddle.testing import RecordedRequest, Reply, Rule, ScriptedServer
from huddle.usage import UsageLedger

MARKER = re.compile(r"\[S\d+\]")
LATENCY_S = 0.1


def markers(request: RecordedRequest) -> set[str]:
    return set(MARKER.findall(json.dumps(request.messages)))


def answer_for_session(request: RecordedRequest) -> Reply:
    """``agent for [Sn]``, or ``MIXED`` when the request held several sessions' markers."""
    found = markers(request)
    label = found.pop() if len(found) == 1 else "MIXED"
    return Reply(content=f"{request.agent} for {label}", delay_s=LATENCY_S)


def delegate_halves(request: RecordedRequest) -> Reply:
    (label,) = markers(request)
    assignments = [{"worker": w, "task": f"half of {label}"} for w in ("w1", "w2")]
    return Reply(content=json.dumps({"assignments": assignments}), delay_s=LATENCY_S)


RULES = [
    Rule(system="Reply with JSON only", reply=delegate_halves),
    Rule(agent="planner", reply=Reply(content='{"goal": "answer", "steps": [], "done": true}', delay_s=LATENCY_S)),
    Rule(reply=answer_for_session),
]


def model(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "instruction": f"You are {n}."} for n in names]


KINDS: dict[str, dict[str, Any]] = {
    "group_chat": {"team": {"name": "desk", "plan": "always"}, "agents": [{"role": "planner"}, {"role": "responder"}]},
    "sequential": {"team": {"name": "pipe", "kind": "sequential"}, "agents": model("a", "b")},
    "parallel": {"team": {"name": "fan", "kind": "parallel"}, "agents": model("p1", "p2", "p3")},
    "event_driven": {
        "team": {"name": "bus", "kind": "event_driven"},
        "agents": [
            {"name": "e1", "instruction": "e1", "subscribe": ["task"], "publish": ["next"]},
            {"name": "e2", "instruction": "e2", "subscribe": ["next"]},
        ],
    },
    "hierarchical": {
        "team": {"name": "boss", "kind": "hierarchical"},
        "manager": {"name": "lead", "instruction": "You lead."},
        "agents": model("w1", "w2"),
    },
}
CALLS_PER_TURN = {"group_chat": 2, "sequential": 2, "parallel": 3, "event_driven": 2, "hierarchical": 4}


def spec_of(kind: str) -> TeamSpec | PatternSpec:
    return TeamSpec.model_validate(KINDS[kind]) if kind == "group_chat" else PatternSpec.model_validate(KINDS[kind])


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(rules=RULES) as running:
        yield running


def settings_for(server: ScriptedServer, tmp_path: Path, extra: str = "") -> Settings:
    (tmp_path / "huddle.yaml").write_text(
        f"models:\n  default: {{model: scripted, base_url: '{server.base_url}', max_retries: 0,"
        " price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}\n" + extra
    )
    return load_settings()


async def chat(team: Team, label: str, turns: int) -> list[RunResult]:
    """One session: `turns` tasks one after another on the same team, as ``huddle chat`` would."""
    results = []
    for turn in range(1, turns + 1):
        results.append(await team.run(f"{label} question {turn}"))
    return results


async def test_concurrent_sessions_of_every_kind_stay_isolated(server: ScriptedServer, tmp_path: Path) -> None:
    settings = settings_for(server, tmp_path)
    ledger = UsageLedger()
    kinds = list(KINDS) * 8  # 40 sessions, 8 of each kind
    teams = [build_team(spec_of(kind), settings, ledger=ledger, session_id=f"s{i}") for i, kind in enumerate(kinds)]
    started = time.perf_counter()
    try:
        sessions = await asyncio.gather(*(chat(team, f"[S{i}]", turns=2) for i, team in enumerate(teams)))
    finally:
        await asyncio.gather(*(team.close() for team in teams))
    elapsed = time.perf_counter() - started

    served = server.chat_requests
    assert all(len(markers(r)) == 1 for r in served), "a request mixed two sessions' context"
    serial_s = len(served) * LATENCY_S
    assert elapsed < serial_s / 5, f"{len(served)} calls took {elapsed:.1f} s: the sessions did not run concurrently"
    for i, (kind, results) in enumerate(zip(kinds, sessions, strict=True)):
        label, session = f"[S{i}]", f"s{i}"
        for result in results:
            assert result.session_id == session and result.usage.calls == CALLS_PER_TURN[kind]
            assert set(MARKER.findall(result.answer)) == {label}, (kind, result.answer)
            assert all(set(MARKER.findall(m.content)) <= {label} for m in result.messages)
            assert {r.session_id for r in ledger.records(run_id=result.run_id)} == {session}
        # What the server saw for this session is exactly what the ledger attributes to it, agent by agent.
        seen = Counter(r.agent for r in served if markers(r) == {label})
        metered = Counter(r.agent for r in ledger.records(session_id=session))
        assert seen == metered and sum(metered.values()) == 2 * CALLS_PER_TURN[kind]
        assert {r.run_id for r in ledger.records(session_id=session)} == {r.run_id for r in results}


async def test_one_sessions_budget_never_counts_another_sessions_spending(tmp_path: Path) -> None:
    """Two pipelines share the ledger and the settings' per-run budget: the one whose first step spends most of it
    stops; the other, running at the same time (its later steps after the spender's first), finishes."""
    spend = Rule(agent="a", last=r"^\[S1\]", reply=Reply(content="long " * 700))  # ~700 tokens at once
    ledger = UsageLedger()
    pipeline = PatternSpec.model_validate(
        {"team": {"name": "pipe", "kind": "sequential"}, "agents": model("a", "b", "c")}
    )
    with ScriptedServer(rules=[spend, *RULES]) as server:
        settings = settings_for(server, tmp_path, "budget: {run: {max_tokens: 1200}}\n")
        teams = [build_team(pipeline, settings, ledger=ledger, session_id=f"s{i}") for i in (1, 2)]
        try:
            spender, frugal = await asyncio.gather(teams[0].run("[S1] go"), teams[1].run("[S2] go"))
        finally:
            await asyncio.gather(*(team.close() for team in teams))

    assert spender.stop_reason.startswith("budget: step 2 (b)"), spender.stop_reason
    assert frugal.stop_reason == "finished: 3 steps" and frugal.answer == "c for [S2]"
    assert frugal.budget is not None and frugal.budget["stopped"] is None
    assert ledger.totals(session_id="s2").calls == 3


async def test_concurrent_sessions_share_one_memory_store_without_seeing_each_others_facts(
    server: ScriptedServer, tmp_path: Path
) -> None:
    settings = settings_for(server, tmp_path)
    memory = VectorMemory.from_settings(settings)  # one store (one Chroma client, one embedder) for every session
    codes = {i: f"{4000 + 111 * i}" for i in range(6)}

    def team(i: int) -> GroupChatTeam:
        spec = TeamSpec.model_validate(
            {
                "team": {"name": "desk"},
                "agents": [{"role": "memory", "memory_scopes": [f"user:u{i}"]}, {"role": "responder"}],
            }
        )
        return GroupChatTeam(spec, settings, memory=memory, session_id=f"s{i}")

    async def session(i: int) -> RunResult:
        chat_team = team(i)
        try:
            await chat_team.run(f"[S{i}] Please remember that my locker code is {codes[i]}.")
            return await chat_team.run(f"[S{i}] What is my locker code?")
        finally:
            await chat_team.close()

    for i, result in enumerate(await asyncio.gather(*(session(i) for i in codes))):
        recalled = next(m.content for m in result.messages if m.source == "memory")
        assert f"my locker code is {codes[i]}" in recalled
        others = {code for j, code in codes.items() if j != i}
        assert not any(code in recalled for code in others), f"session {i} recalled another user's fact"
    for i, code in codes.items():
        assert [item.text for item in memory.list(scope=f"user:u{i}")] == [f"my locker code is {code}"]
        episodes = " ".join(item.text for item in memory.list(scope=f"session:s{i}"))  # each chat's answers
        assert set(MARKER.findall(episodes)) == {f"[S{i}]"}


@pytest.mark.local_model
async def test_concurrent_sessions_on_the_shared_embedded_model_get_their_own_deterministic_answers(
    tmp_path: Path,
) -> None:
    """One llama.cpp instance serves every session (its lock serialises generation): answers given concurrently are
    the ones the same prompts get one at a time, and each call is metered to its own session."""
    (tmp_path / "huddle.yaml").write_text("models:\n  local: {provider: local, max_tokens: 12}\nmodel: local\n")
    settings = load_settings()
    spec = PatternSpec.model_validate(
        {"team": {"name": "solo", "kind": "sequential"}, "agents": [{"name": "a", "instruction": "Answer briefly."}]}
    )
    questions = ["What is the capital of France?", "Name a primary colour.", "What is 2+2?"]
    ledger = UsageLedger()
    teams = [build_team(spec, settings, ledger=ledger, session_id=f"s{i}") for i in range(len(questions))]
    try:
        alone = [(await team.run(q)).answer for team, q in zip(teams, questions, strict=True)]
        together = await asyncio.gather(*(team.run(q) for team, q in zip(teams, questions, strict=True)))
    finally:
        await asyncio.gather(*(team.close() for team in teams))
    assert [r.answer for r in together] == alone
    for i, result in enumerate(together):
        assert [r.session_id for r in ledger.records(run_id=result.run_id)] == [f"s{i}"]
