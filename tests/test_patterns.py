"""The orchestration kinds end to end, over real HTTP to the scripted server.

Each test checks what its kind promises and would fail if the promise broke: a pipeline hands each output on as the
next input; a fan-out runs its members at the same time (4 members that take 0.3 s each finish well under 2 x 0.3 s)
and survives members that raise or time out; a manager delegates and integrates; event handlers react to published
topics and the run ends by itself. The server's replies are computed from what each agent was actually sent, so the
assertions see what the models saw.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, TextMessage
from autogen_core import CancellationToken

from huddle.config.settings import Settings, load_settings
from huddle.errors import ConfigError
from huddle.teams.base import RunResult, build_team
from huddle.teams.kinds import PatternSpec, load_any_team
from huddle.testing import Fault, RecordedRequest, Reply, Rule, ScriptedServer
from huddle.tracing import read_run

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "patterns"
DELAY_S = 0.3


def echo(request: RecordedRequest, delay_s: float = 0.0) -> Reply:
    """``agent(what it was sent)``: nesting shows who saw whose output, in which order."""
    return Reply(content=f"{request.agent}({request.last_text})", delay_s=delay_s)


def slow_echo(request: RecordedRequest) -> Reply:
    return echo(request, DELAY_S)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running


@pytest.fixture
def settings(server: ScriptedServer, tmp_path: Path) -> Settings:
    (tmp_path / "huddle.yaml").write_text(
        f"models:\n  default: {{model: scripted, base_url: '{server.base_url}', max_retries: 0,"
        " price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}\n"
    )
    return load_settings()


def spec(kind: str, agents: Sequence[dict[str, Any]], **extra: Any) -> PatternSpec:
    team = {"name": f"{kind}-team", "kind": kind, **extra.pop("team", {})}
    return PatternSpec.model_validate({"team": team, "agents": list(agents), **extra})


def model_agents(*names: str, **fields: Any) -> list[dict[str, Any]]:
    return [{"name": name, "instruction": f"You are {name}.", **fields} for name in names]


async def run(settings: Settings, team_spec: PatternSpec, task: str) -> RunResult:
    result, _ = await timed(settings, team_spec, task, warm_up=False)
    return result


async def timed(
    settings: Settings, team_spec: PatternSpec, task: str, *, warm_up: bool = True
) -> tuple[RunResult, float]:
    """The result of `task` and its wall time, after one untimed run (a process's first HTTP calls pay a one-off
    set-up of about 0.25 s, which would blur what the timing is meant to show)."""
    team = build_team(team_spec, settings)
    try:
        if warm_up:
            await team.run("warm-up")
        started = time.perf_counter()
        result = await team.run(task)
        elapsed = time.perf_counter() - started
    finally:
        await team.close()
    assert isinstance(result, RunResult)
    return result, elapsed


class ExplodingAgent(BaseChatAgent):
    """A custom member that always raises (``use: tests.test_patterns:ExplodingAgent``)."""

    def __init__(self, name: str = "exploding") -> None:
        super().__init__(name, "raises on every message")

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        raise RuntimeError("the exploding member exploded")

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        """Stateless."""


# --- sequential ---------------------------------------------------------------------------------------------------


async def test_sequential_passes_each_output_as_the_next_input(server: ScriptedServer, settings: Settings) -> None:
    server.add_rule(Rule(reply=echo))
    agents = model_agents("outline", "draft", "edit")
    agents[2]["input"] = "Request: {task}\nDraft: {input}"
    result = await run(settings, spec("sequential", agents), "T")

    assert [r.agent for r in server.chat_requests] == ["outline", "draft", "edit"]
    assert [r.last_text for r in server.chat_requests] == [
        "T",
        "outline(T)",
        "Request: T\nDraft: draft(outline(T))",
    ]
    assert result.answer == "edit(Request: T\nDraft: draft(outline(T)))"
    assert [m.source for m in result.messages] == ["user", "outline", "draft", "edit"]
    assert [(d.speaker, d.policy) for d in result.decisions] == [
        ("outline", "sequence"),
        ("draft", "sequence"),
        ("edit", "sequence"),
    ]
    assert result.stop_reason == "finished: 3 steps" and result.kind == "sequential"
    assert result.usage.calls == 3 and set(result.usage.by_agent) == {"outline", "draft", "edit"}
    assert result.usage.prompt_tokens == sum(r.usage[0] for r in server.chat_requests if r.usage)


async def test_sequential_stops_at_a_failed_step_unless_it_is_optional(
    server: ScriptedServer, settings: Settings
) -> None:
    server.add_rule(Rule(agent="b", fault=Fault(kind="server_error")))
    server.add_rule(Rule(reply=echo))
    stopped = await run(settings, spec("sequential", model_agents("a", "b", "c")), "T")
    assert stopped.answer == ""  # a's output is a draft, not the pipeline's answer: the run failed
    assert stopped.stop_reason.startswith("error: step 2 (b) failed:") and "b" in stopped.failures
    assert [m.content for m in stopped.messages if m.source == "a"] == ["a(T)"]  # the draft is kept
    assert "c" not in stopped.usage.by_agent

    agents = model_agents("a", "b", "c")
    agents[1]["optional"] = True
    skipped = await run(settings, spec("sequential", agents), "T")
    assert skipped.answer == "c(a(T))"  # b's input went on to c
    assert skipped.stop_reason == "finished: 3 steps (1 optional skipped)" and list(skipped.failures) == ["b"]


# --- parallel -----------------------------------------------------------------------------------------------------


async def test_parallel_members_run_concurrently_and_the_aggregator_sees_every_output(
    server: ScriptedServer, settings: Settings
) -> None:
    server.add_rule(Rule(agent="editor", reply=lambda r: Reply(content=f"merged {r.last_text.count('##')} reviews")))
    server.add_rule(Rule(reply=slow_echo))
    team_spec = spec(
        "parallel",
        model_agents("security", "style", "facts", "tone"),
        aggregator={"name": "editor", "instruction": "Merge the reviews."},
    )
    result, elapsed = await timed(settings, team_spec, "Review this")

    assert elapsed < 2 * DELAY_S, f"4 members of {DELAY_S} s each took {elapsed:.2f} s: they ran one after another"
    editor = server.chat_requests[-1]
    assert editor.agent == "editor"
    for name in ("security", "style", "facts", "tone"):
        assert f"## {name}\n{name}(Review this)" in editor.last_text
    assert result.answer == "merged 4 reviews" and result.stop_reason == "finished: 4 members answered"
    assert [d.policy for d in result.decisions] == ["fan_out"] * 4 + ["aggregate"]
    assert result.usage.calls == 5 and not result.failures


async def test_parallel_team_with_failing_members_returns_the_others_and_names_the_failed(
    server: ScriptedServer, settings: Settings
) -> None:
    server.add_rule(Rule(agent="slow", reply=Reply(content="too late", delay_s=5)))
    server.add_rule(Rule(reply=slow_echo))
    agents = [
        *model_agents("a", "b"),
        {"name": "boom", "use": "tests.test_patterns:ExplodingAgent", "config": {"name": "boom"}},
        {"name": "slow", "instruction": "slow", "timeout_s": 0.5},
    ]
    result, elapsed = await timed(settings, spec("parallel", agents), "T", warm_up=False)

    assert "## a\na(T)" in result.answer and "## b\nb(T)" in result.answer
    assert set(result.failures) == {"boom", "slow"}
    assert "RuntimeError: the exploding member exploded" in result.failures["boom"]
    assert result.failures["slow"] == "timed out after 0.5 s"
    assert result.stop_reason.startswith("partial: 2 of 4 members answered; 2 members failed: ")
    assert "boom (RuntimeError" in result.stop_reason and "slow (timed out" in result.stop_reason
    assert "## boom\n(failed: RuntimeError" in result.answer  # the merged answer says what is missing
    assert elapsed < 3, "the timed-out member must not hold the run for its whole 5 s"
    slow = result.usage.by_agent["slow"]
    assert (slow.calls, slow.errors) == (1, 1)  # the abandoned call is still metered


async def test_parallel_merge_function_and_total_failure(server: ScriptedServer, settings: Settings) -> None:
    server.add_rule(Rule(agent="z", fault=Fault(kind="server_error")))
    server.add_rule(Rule(reply=echo))
    merged = await run(settings, spec("parallel", model_agents("x", "yy"), team={"merge": f"{__name__}:shortest"}), "T")
    assert merged.answer == "x(T)"

    failed = await run(settings, spec("parallel", model_agents("z")), "T")
    assert failed.answer == "" and failed.stop_reason.startswith("error: every member failed")


def shortest(outputs: dict[str, str]) -> str:
    """A merge function for the test above: the shortest output (the first on ties)."""
    return min(outputs.values(), key=len)


# --- hierarchical -------------------------------------------------------------------------------------------------


def manager_reply(request: RecordedRequest) -> Reply:
    """Delegates when asked for JSON, else integrates what it was sent."""
    if "Reply with JSON only" in request.system_text:
        assignments = [
            {"worker": "research", "task": "find the refund policy"},
            {"worker": "billing", "task": "check order 1042"},
            {"worker": "nobody", "task": "ignored"},
        ]
        return Reply(content=json.dumps({"assignments": assignments}))
    return Reply(content=f"integrated: {request.last_text}")


async def test_hierarchical_manager_delegates_concurrently_and_integrates(
    server: ScriptedServer, settings: Settings
) -> None:
    server.add_rule(Rule(agent="lead", reply=manager_reply))
    server.add_rule(Rule(agent="billing", reply=lambda r: echo(r, 2 * DELAY_S)))
    server.add_rule(Rule(reply=slow_echo))
    research = {"team": {"name": "research", "kind": "sequential"}, "agents": model_agents("search", "summarise")}
    team_spec = spec(
        "hierarchical",
        [
            {"name": "research", "team": research, "description": "finds policies"},
            {"name": "billing", "instruction": "You check orders.", "description": "checks orders and refunds"},
        ],
        manager={"name": "lead", "instruction": "You lead a support team."},
    )
    result, elapsed = await timed(settings, team_spec, "Can I get a refund for order 1042?")

    requests = server.chat_requests[len(server.chat_requests) // 2 :]  # this run's, after the warm-up's
    assert [r.agent for r in requests][0::4] == ["lead", "lead"] and len(requests) == 5
    delegate = requests[0]
    assert delegate.agent == "lead" and "- research: finds policies" in delegate.system_text
    assert delegate.response_format is not None  # structured output, like the planner
    # research's two steps (2 x 0.3 s) overlap billing's 0.6 s: about 0.6 s, not 1.2 s (the manager's calls are fast).
    assert elapsed < 3 * DELAY_S, f"took {elapsed:.2f} s: the workers ran one after another"
    integrate = server.chat_requests[-1].last_text
    assert "## research (sub-task: find the refund policy)\nsummarise(search(find the refund policy))" in integrate
    assert "## billing (sub-task: check order 1042)\nbilling(check order 1042)" in integrate
    assert result.answer.startswith("integrated: Task: Can I get a refund")
    assert [(d.speaker, d.policy) for d in result.decisions] == [
        ("research", "delegate"),
        ("billing", "delegate"),
        ("research/search", "sequence"),
        ("research/summarise", "sequence"),
        ("lead", "integrate"),
    ]
    sources = [m.source for m in result.messages]
    assert sources[:2] == ["user", "lead"] and sources[-1] == "lead"
    assert {"research/search", "research", "billing"} <= set(sources)  # a nested team's steps, named after it
    assert "dropped 1 assignments to unknown workers nobody" in result.messages[1].content
    assert result.usage.by_agent["lead"].calls == 2 and result.usage.by_agent["search"].calls == 1


async def test_hierarchical_unusable_delegation_gives_every_worker_the_task(
    server: ScriptedServer, settings: Settings
) -> None:
    server.add_rule(Rule(agent="lead", call_index=0, reply="I'd rather chat about it"))
    server.add_rule(Rule(agent="lead", reply=lambda r: Reply(content=f"answer from {r.last_text.count('## ')}")))
    server.add_rule(Rule(reply=echo))
    team_spec = spec("hierarchical", model_agents("w1", "w2"), manager={"name": "lead", "instruction": "You lead."})
    result = await run(settings, team_spec, "T")
    assert sorted(r.last_text for r in server.chat_requests if r.agent in ("w1", "w2")) == ["T", "T"]
    assert result.answer == "answer from 2" and "every worker gets the whole task" in result.messages[1].content


# --- event-driven -------------------------------------------------------------------------------------------------

ORDER_AGENTS = [
    {"name": "intake", "instruction": "i", "subscribe": ["order_created"], "publish": ["order_valid"]},
    {"name": "inventory", "instruction": "i", "subscribe": ["order_valid"], "publish": ["stock_reserved"]},
    {"name": "billing", "instruction": "b", "subscribe": ["order_valid"], "publish": ["invoice_sent"]},
    {"name": "notifier", "instruction": "n", "subscribe": ["stock_reserved", "invoice_sent"]},
]


async def test_event_driven_members_react_to_published_topics_until_idle(
    server: ScriptedServer, settings: Settings
) -> None:
    server.add_rule(Rule(reply=slow_echo))
    team_spec = spec("event_driven", ORDER_AGENTS, team={"start_topic": "order_created"})
    result, elapsed = await timed(settings, team_spec, "order 7")

    events = [(d.speaker, d.reason) for d in result.decisions]
    assert events[:3] == [
        ("intake", "order_created from user"),
        ("inventory", "order_valid from intake"),
        ("billing", "order_valid from intake"),
    ]
    assert sorted(events[3:]) == [
        ("notifier", "invoice_sent from billing"),
        ("notifier", "stock_reserved from inventory"),
    ]
    # intake, then inventory and billing together, then the notifier twice at once: 3 rounds of 0.3 s, not 5.
    assert elapsed < 4 * DELAY_S, f"took {elapsed:.2f} s: handlers of one event ran one after another"
    assert result.stop_reason == "idle: no handler pending"
    assert result.answer.startswith("notifier(") and result.messages[-1].source == "event_driven-team"
    assert {m.source for m in result.messages} >= {"user", "intake", "inventory", "billing", "notifier"}
    assert result.usage.calls == 5 and result.usage.by_agent["notifier"].calls == 2


async def test_event_driven_stop_event_routing_and_failures(server: ScriptedServer, settings: Settings) -> None:
    server.add_rule(Rule(agent="triage", reply="topic: refund_requested\nrefund order 7"))
    server.add_rule(Rule(agent="refunds", fault=Fault(kind="server_error")))
    server.add_rule(Rule(agent="escalation", reply=Reply(content="a human will call you", delay_s=0.1)))
    server.add_rule(Rule(agent="never", reply=Reply(content="never seen", delay_s=5)))
    agents = [
        {"name": "triage", "instruction": "t", "subscribe": ["task"], "publish": ["question", "refund_requested"]},
        {"name": "faq", "instruction": "f", "subscribe": ["question"], "publish": ["done"]},
        {"name": "refunds", "instruction": "r", "subscribe": ["refund_requested"], "publish": ["done"]},
        {"name": "never", "instruction": "n", "subscribe": ["refund_requested"]},
        {"name": "escalation", "instruction": "e", "subscribe": ["member_failed"], "publish": ["done"]},
    ]
    team_spec = spec("event_driven", agents, team={"stop_topics": ["done"]})
    result, elapsed = await timed(settings, team_spec, "I want my money back", warm_up=False)

    assert [r.agent for r in server.chat_requests if r.agent != "never"] == ["triage", "refunds", "escalation"]
    assert server.chat_requests[1].last_text == "refund order 7"  # the routing line picked the topic, then dropped
    escalation = next(r for r in server.chat_requests if r.agent == "escalation")
    assert "refunds failed on refund_requested" in escalation.last_text
    assert result.answer == "a human will call you"
    assert result.stop_reason.startswith("stop event: done from escalation; 1 member failed: refunds")
    assert elapsed < 2, "the stop event must cancel the handler still waiting on its 5 s reply"


async def test_event_driven_max_events_stops_a_loop(server: ScriptedServer, settings: Settings) -> None:
    server.add_rule(Rule(reply="again"))
    agents = [
        {"name": "ping", "instruction": "p", "subscribe": ["task", "pong"], "publish": ["ping"]},
        {"name": "pong", "instruction": "p", "subscribe": ["ping"], "publish": ["pong"]},
    ]
    result = await run(settings, spec("event_driven", agents, team={"max_events": 6}), "go")
    assert result.stop_reason == "max_events: 6 events published" and result.usage.calls == 6  # one per event


# --- specs, YAML, composition -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
async def test_every_example_loads_and_runs(path: Path, server: ScriptedServer, settings: Settings) -> None:
    server.add_rule(Rule(system="Reply with JSON only", reply=delegate_to_everyone))
    server.add_rule(Rule(agent="planner", reply='{"goal": "answer", "steps": [], "done": true}'))
    server.add_rule(Rule(reply=echo))
    loaded = load_any_team(path)
    team = build_team(loaded, settings)
    try:
        result = await team.run("Customer 42 ordered a lamp; it arrived broken.")
    finally:
        await team.close()
    assert isinstance(result, RunResult)  # every example is a pattern kind (group chats only nested)
    assert result.answer and result.usage.calls >= 1 and not result.failures, result.failures
    if loaded.team.kind == "hierarchical":
        assert {d.speaker for d in result.decisions if d.policy == "delegate"} == {a.name for a in loaded.agents}
    assert json.loads(result.model_dump_json())["team"] == loaded.team.name


def delegate_to_everyone(request: RecordedRequest) -> Reply:
    """A manager that gives the task to every worker listed in its prompt."""
    workers = re.findall(r"^- ([A-Za-z][\w-]*): ", request.system_text, flags=re.M)
    return Reply(content=json.dumps({"assignments": [{"worker": w, "task": request.last_text} for w in workers]}))


def test_yaml_errors_name_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "team.yaml"
    bad.write_text("team: {name: t, kind: parallel}\nagents:\n  - {name: a, instruction: x}\n  - {name: b, team: 3}\n")
    with pytest.raises(ConfigError, match=r"team.yaml:4: agents.1.team"):
        load_any_team(bad)
    bad.write_text("team: {name: t, kind: sequential}\nagents:\n  - {name: a, instruction: x, input: '{nope}'}\n")
    with pytest.raises(ConfigError, match=r"team.yaml:3: agents.0: .*unknown placeholder\(s\) nope"):
        load_any_team(bad)
    bad.write_text("team: {name: t, kind: event_driven}\nagents:\n  - {name: a, instruction: x, subscribe: [b]}\n")
    with pytest.raises(ConfigError, match="no member subscribes to the start topic 'task'"):
        load_any_team(bad)
    bad.write_text("team: {name: t, kind: hierarchical}\nagents:\n  - {name: a, instruction: x}\n")
    with pytest.raises(ConfigError, match="needs a `manager`"):
        load_any_team(bad)


def test_team_files_are_included_relative_to_their_parent_and_cycles_refused(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.yaml").write_text(
        "team: {name: inner, kind: sequential}\nagents:\n  - {name: x, instruction: x}\n"
    )
    (tmp_path / "outer.yaml").write_text(
        "team: {name: outer, kind: parallel}\nagents:\n"
        "  - {name: a, team: sub/inner.yaml}\n  - {name: b, team: assistant}\n"
    )
    outer = load_any_team(tmp_path / "outer.yaml")
    assert isinstance(outer, PatternSpec)
    assert outer.agents[0].team.team.name == "inner"  # type: ignore[union-attr]
    assert outer.agents[1].team.team.kind == "group_chat"  # type: ignore[union-attr]  # a preset by name

    (tmp_path / "loop.yaml").write_text(
        "team: {name: loop, kind: sequential}\nagents:\n  - {name: a, team: loop.yaml}\n"
    )
    with pytest.raises(ConfigError, match="includes itself"):
        load_any_team(tmp_path / "loop.yaml")
    (tmp_path / "missing.yaml").write_text(
        "team: {name: m, kind: sequential}\nagents:\n  - {name: a, team: nowhere.yaml}\n"
    )
    with pytest.raises(ConfigError, match=r"agents.0.team: no such team file 'nowhere.yaml'"):
        load_any_team(tmp_path / "missing.yaml")


async def test_a_group_chat_nested_in_a_pipeline_is_metered_in_the_same_run(
    server: ScriptedServer, settings: Settings
) -> None:
    server.add_rule(Rule(agent="planner", reply='{"goal": "answer", "steps": [], "done": true}'))
    server.add_rule(Rule(reply=echo))
    chat = {
        "team": {"name": "helpdesk", "plan": "always"},
        "agents": [{"role": "planner"}, {"role": "responder"}],
    }
    team_spec = spec("sequential", [{"name": "desk", "team": chat}, *model_agents("polish")])
    result = await run(settings, team_spec, "hello")

    assert result.answer.startswith("polish(responder(")
    assert set(result.usage.by_agent) == {"planner", "responder", "polish"}
    assert ("desk/responder", "plan") in [(d.speaker, d.policy) for d in result.decisions]
    assert [m.source for m in result.messages] == ["user", "desk/planner", "desk", "polish"]

    # One trace for the whole run: the nested chat's run span sits under the member's span that ran it.
    spans = {s["id"]: s for s in read_run(settings.runs_dir, result.run_id)}
    parent = {s["name"]: spans[s["parent"]]["name"] if s["parent"] else None for s in spans.values()}
    assert parent["invoke_agent desk"] == parent["invoke_agent polish"] == f"run {result.run_id}"
    nested_run = next(s for s in spans.values() if s["kind"] == "run" and s["parent"])
    assert spans[nested_run["parent"]]["name"] == "invoke_agent desk"
    models = [s for s in spans.values() if s["kind"] == "model"]
    assert sorted(s["attributes"]["gen_ai.agent.name"] for s in models) == ["planner", "polish", "responder"]
