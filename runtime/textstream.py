"""Token ids -> text pieces for a stream, honouring stop strings.

Text that could still turn into the start of a stop string is held back until it cannot; when
a stop string appears, the text before it is the last piece and `stopped` is set.
"""
from __future__ import annotations


class TextStream:
    def __init__(self, tokenizer, stops=None, skip_special_tokens: bool = True):
        self._dec = tokenizer.stream(skip_special_tokens=skip_special_tokens)
        self.stops = [s for s in ([stops] if isinstance(stops, str) else list(stops or [])) if s]
        self._keep = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""      # everything decoded so far (up to a stop string, once found)
        self._emitted = 0
        self.stopped = None  # the stop string that ended the stream

    def put(self, token_id: int) -> str:
        """The text that is now safe to show (may be empty)."""
        if self.stopped is not None:
            return ""
        self.text += self._dec.put(token_id)
        return self._release(final=False)

    def finish(self) -> str:
        """The rest, once generation has ended."""
        if self.stopped is None:
            self.text += self._dec.flush()
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stops and self.stopped is None:
            hits = [(self.text.find(s, max(0, self._emitted - self._keep)), s) for s in self.stops]
            hits = [(i, s) for i, s in hits if i >= 0]
            if hits:
                i, s = min(hits)
                self.stopped = s
                self.text = self.text[:i]
                final = True
        safe = len(self.text) if final or not self.stops else \
            max(self._emitted, len(self.text) - self._keep)
        piece = self.text[self._emitted:safe]
        self._emitted = max(self._emitted, safe)
        return piece
