"""huddle: managed group chats of specialised LLM agents, steered by token and dollar budgets.

Kept import-light on purpose: ``huddle --help`` must stay fast, so heavy modules (autogen, openai, chromadb) are only
imported by the submodules that need them.
"""

__version__ = "0.1.0"
