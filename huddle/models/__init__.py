"""Model access: profiles become autogen ``ChatCompletionClient``s, every one of them metered into the usage ledger."""

AGENT_HEADER = "X-Huddle-Agent"
"""Names the calling agent on every OpenAI-compatible request (for proxies, logs and the scripted server's rules)."""
