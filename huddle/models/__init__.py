"""Model access: profiles become autogen ``ChatCompletionClient``s, every one of them metered into the usage ledger."""
