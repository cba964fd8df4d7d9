"""Teams and the group-chat manager's speaker policy, installed as ``huddle.teams``."""
