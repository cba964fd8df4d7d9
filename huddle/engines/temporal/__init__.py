"""Durable, multi-host runs on Temporal (``engine: temporal``; the ``temporal`` extra).

A chat session is one long-running workflow (`session_workflow`): each turn is an Update, approvals are Updates, and
the team itself (its manager's policy chain, its budget governor) runs inside the workflow, deterministically. What
touches the world is an activity: every model call (`activities.model_call`, with heartbeats and the profile's
retries as Temporal's retry policy) and every blocking step of the team's code (`huddle.effects.offload`: tools,
memory, embeddings) as a local activity whose result is replayed. So a worker that dies mid-turn costs the turn
nothing: another worker replays the workflow's history, gets every finished call's result back from it, and makes
only the interrupted call again.
"""
