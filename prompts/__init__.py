"""Prompt templates: one ``.md`` file per role and per manager prompt, with ``{placeholders}``.

Templates are plain ``str.format`` text (write literal braces as ``{{`` and ``}}``). A template may start with a
front-matter block of ``key: value`` lines between ``---`` lines (a role's ``description``, which the manager reads).
Rendering fails loudly on a missing or unexpected variable rather than sending a model a prompt with a hole in it.
``huddle prompts`` lists every template with its token count.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import cache
from importlib import resources

from huddle.errors import HuddleError


class PromptError(HuddleError):
    """A template was rendered with missing or unknown variables, or does not exist."""


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded template and the placeholders it needs."""

    name: str
    text: str
    meta: dict[str, str]

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(field for _, field, _, _ in string.Formatter().parse(self.text) if field)

    def render(self, /, **values: object) -> str:
        """Fill every placeholder; a missing or unexpected variable raises `PromptError` naming it."""
        missing = self.placeholders - values.keys()
        unknown = values.keys() - self.placeholders
        if missing or unknown:
            problems = []
            if missing:
                problems.append(f"missing {', '.join(sorted(missing))}")
            if unknown:
                problems.append(f"unexpected {', '.join(sorted(unknown))}")
            raise PromptError(f"prompt {self.name!r} ({self.name}.md): {'; '.join(problems)}")
        return self.text.format(**values)


def names() -> list[str]:
    """Every template shipped in this package, by name (file name without ``.md``)."""
    return sorted(p.name[:-3] for p in resources.files(__name__).iterdir() if p.name.endswith(".md"))


@cache
def load(name: str) -> PromptTemplate:
    """The template ``prompts/{name}.md``, or for ``package:name`` the file ``{name}.md`` in that Python package's
    folder: a plugin ships its own prompts (``support_shop.prompts:support_responder``) under the same rules."""
    package, _, template = name.rpartition(":")
    try:
        path = resources.files(package or __name__) / f"{template}.md"
    except ModuleNotFoundError:
        raise PromptError(f"prompt {name!r}: no package {package!r} is installed") from None
    if not path.is_file():
        raise PromptError(f"no prompt template {name!r} (known: {', '.join(names())})")
    text = path.read_text(encoding="utf-8")
    meta: dict[str, str] = {}
    if text.startswith("---\n"):
        header, _, text = text[4:].partition("\n---\n")
        meta = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in header.splitlines()) if k.strip()}
    return PromptTemplate(name=name, text=text.strip() + "\n", meta=meta)


def render(template: str, /, **values: object) -> str:
    """Shorthand for ``load(name).render(**values)``."""
    return load(template).render(**values)
