"""The manager's policy chain in isolation: cheapest policy first, and no livelock on bad model choices."""

from __future__ import annotations

from autogen_agentchat.messages import TextMessage
from autogen_ext.models.replay import ReplayChatCompletionClient

from huddle.agents.plan import Plan, PlanStep
from huddle.agents.state import RunState
from huddle.teams.manager import Manager, Roles

ROSTER = {"researcher": "finds facts", "writer": "drafts text", "critic": "reviews drafts", "responder": "answers"}


def said(source: str, text: str = "...") -> TextMessage:
    return TextMessage(source=source, content=text)


def manager(replies: list[str], **kwargs: object) -> tuple[Manager, ReplayChatCompletionClient]:
    client = ReplayChatCompletionClient(replies)
    return Manager(ROSTER, Roles(responder="responder"), RunState(), client=client, **kwargs), client  # type: ignore[arg-type]


async def test_previous_speaker_is_never_chosen_even_when_the_model_insists() -> None:
    """AutoGen #7471: the model names the previous speaker every time; the manager must not pick it, nor loop."""
    mgr, _ = manager(["writer"] * 20)
    thread = [said("user", "write a poem"), said("writer")]
    speaker = await mgr.select(thread)
    assert speaker != "writer"
    assert (mgr.decisions[-1].policy, speaker) == ("fallback", "responder")


async def test_fallback_without_responder_candidate_moves_round_the_roster() -> None:
    mgr, _ = manager(["responder", "responder"])
    mgr.skipped.add("critic")
    thread = [said("user"), said("responder")]  # the responder spoke last, so it is forbidden now
    speaker = await mgr.select(thread)
    assert speaker not in ("responder", "critic")
    assert mgr.decisions[-1].policy == "fallback"


async def test_mentions_and_plans_cost_no_model_call() -> None:
    mgr, client = manager([])
    assert await mgr.select([said("user"), said("researcher", "over to @critic please")]) == "critic"
    assert mgr.decisions[-1].policy == "mention"
    mgr.state.set_plan(
        Plan(
            goal="g",
            steps=[
                PlanStep(id=1, assignee="writer", instruction="draft"),
                PlanStep(id=2, assignee="responder", instruction="answer", depends_on=[1]),
            ],
        )
    )
    assert await mgr.select([said("user"), said("critic")]) == "writer"
    assert mgr.decisions[-1].policy == "plan"
    mgr.state.complete(1, "drafted")
    assert await mgr.select([said("user"), said("writer")]) == "responder"
    assert client.total_usage().prompt_tokens == 0  # the replay client was never asked


async def test_valid_model_choice_is_taken_as_is() -> None:
    mgr, _ = manager(["critic"])
    assert await mgr.select([said("user"), said("writer")]) == "critic"
    assert mgr.decisions[-1].policy == "llm"


async def test_similarity_policy_picks_the_closest_description_above_threshold() -> None:
    def similarity(text: str, descriptions: dict[str, str]) -> dict[str, float]:
        return {name: (0.95 if "review" in desc and "check" in text else 0.1) for name, desc in descriptions.items()}

    mgr, _ = manager([], similarity=similarity)
    assert await mgr.select([said("user"), said("writer", "please check this draft")]) == "critic"
    assert mgr.decisions[-1].policy == "similarity"


def failed(source: str, reason: str) -> TextMessage:
    return TextMessage(
        source=source, content=f"{source} failed: {reason}", metadata={"kind": "failure", "error": reason}
    )


async def test_a_member_that_fails_the_same_way_twice_is_not_picked_again() -> None:
    """The model keeps naming the failing member; after its second identical failure it is no longer a candidate."""
    mgr, _ = manager(["writer"] * 20, allow_repeated_speaker=True)
    thread = [said("user", "write a poem"), failed("writer", "ConnectionError: refused")]
    assert await mgr.select(thread) == "writer"  # one failure may be bad luck
    thread.append(failed("writer", "ConnectionError: refused"))
    assert await mgr.select(thread) != "writer"
    assert "writer" in mgr.skipped


async def test_a_failed_planner_hands_the_task_to_the_responder_instead_of_looping() -> None:
    roster = {"planner": "plans", "responder": "answers"}
    state = RunState(task="hi")
    mgr = Manager(roster, Roles(planner="planner", responder="responder"), state)
    assert await mgr.select([said("user", "hi")]) == "planner"
    state.failures["planner"] = "APIConnectionError: Connection error."
    assert await mgr.select([said("user", "hi"), failed("planner", "APIConnectionError: Connection error.")]) == (
        "responder"
    )
    assert mgr.decisions[-1].reason == "planner is unavailable: the responder answers without a plan"


async def test_a_task_that_needs_no_tool_skips_the_planner_with_policy_direct() -> None:
    roster = {"planner": "plans", "tool_executor": "runs tools", "responder": "answers"}
    asked: list[str] = []

    def need(task: str) -> str | None:
        asked.append(task)
        return "arithmetic in the task" if "17" in task else None

    roles = Roles(planner="planner", tool_executor="tool_executor", responder="responder")
    direct = Manager(roster, roles, RunState(task="Give me three tips for clear emails"), tool_need=need)
    assert await direct.select([said("user")]) == "responder"
    assert (direct.decisions[-1].policy, direct.decisions[-1].speaker) == ("direct", "responder")
    planned = Manager(roster, roles, RunState(task="What is 17*23?"), tool_need=need)
    assert await planned.select([said("user")]) == "planner"
    assert "arithmetic" in planned.decisions[-1].reason
    assert asked == ["Give me three tips for clear emails", "What is 17*23?"]
