"""Role agents (planner, tool executor, memory agent, responder and support roles), installed as ``huddle.agents``."""
