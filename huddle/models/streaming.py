"""Each streamed character reaches the caller once, however many attempts a streamed call takes.

A stream cut part-way is retried (or handed to the fallback profile) whole, and the new attempt starts its text from
the beginning. Passing its chunks on as they come showed the delivered text twice ("The quick brown fox jumps over
the The quick brown fox ..."). `Delivery` holds a new attempt's chunks back while they repeat what was already
delivered and passes on only what goes beyond it. When the new attempt says something else (a model sampling with a
temperature rarely repeats itself), what was shown cannot be taken back by skipping: the caller gets `STREAM_RESET`,
then the new attempt's text from its start.

What is passed on is masked (`huddle.secrets.StreamRedactor`) here, so every consumer of a stream (the console, a
serve surface) gets the same masked text as the saved reply.
"""

from __future__ import annotations

from huddle.secrets import StreamRedactor

STREAM_RESET = "\x18"
"""A chunk that is exactly this (ASCII CAN, "cancel") means: discard the text streamed so far, it starts again.

A control character rather than an event type because a chunk travels as a plain ``str`` (autogen's
``ModelClientStreamingChunkEvent.content``, JSON on a serve surface), and a terminal that is not told shows nothing.
"""


class Delivery:
    """What one streamed call has delivered to its caller, across its attempts."""

    def __init__(self) -> None:
        self.shown = ""
        """The attempts' text passed on so far, before masking (a new attempt's raw text is compared with it)."""
        self._attempt = ""
        self._masked = StreamRedactor()

    def restart(self) -> None:
        """A new attempt begins: its text is compared with what was shown from its first character."""
        self._attempt = ""

    def take(self, chunk: str) -> list[str]:
        """The chunks to pass on for `chunk` of the current attempt (none while it repeats what was shown)."""
        if chunk == STREAM_RESET:  # a layer below started its attempt over: so does the comparison
            self._attempt = ""
            return []
        self._attempt += chunk
        if self.shown.startswith(self._attempt):
            return []
        if self._attempt.startswith(self.shown):
            new, self.shown = self._attempt[len(self.shown) :], self._attempt
            return self._mask([new])
        self.shown = self._attempt
        return self._mask([STREAM_RESET, self._attempt])

    def finish(self) -> list[str]:
        """The chunks to pass on when the current attempt ends: a reset (and its text) if it stopped short of what
        was shown, since the caller would otherwise keep the longer text of a failed attempt; then the text held back
        because it could have been the start of a secret."""
        chunks: list[str] = []
        if self._attempt != self.shown:
            self.shown = self._attempt
            chunks = [STREAM_RESET, self._attempt] if self._attempt else [STREAM_RESET]
        return [*self._mask(chunks), *filter(None, [self._masked.flush()])]

    def _mask(self, chunks: list[str]) -> list[str]:
        """`chunks` masked, without the empty ones (text held back): a reset drops what was held of the old text."""
        masked: list[str] = []
        for chunk in chunks:
            if chunk == STREAM_RESET:
                self._masked.drop()
                masked.append(chunk)
            elif text := self._masked.feed(chunk):
                masked.append(text)
        return masked
