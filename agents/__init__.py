"""Role agents (planner, tool executor, memory agent, responder, intent router), installed as ``huddle.agents``."""
