"""Where an answer ends: stop strings, per row of a batched `generate`, and in streamed text.

One home for the rule "the answer is cut before the first stop string" (`cut_at_stop`), used by the
pipeline, the server's streams and the evaluation predictor alike.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Callable

import torch
from transformers import StoppingCriteria

# Tokens decoded at each step to look for a stop string that ends in the newest token: one per
# character of the longest stop string covers it (a token decodes to at least one character), and a
# few more cover tokens that decode to nothing on their own (parts of a multi-byte character).
TAIL_MARGIN = 4


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string, and whether one was found."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


class StopFilter:
    """Incremental `cut_at_stop` for streamed text: holds back the tail that could be the start of a
    stop string, so no character past a stop is ever emitted. Leading whitespace of the answer is
    dropped (the final text is stripped too), so the pieces join to `PipelineResult.text`."""

    def __init__(self, stop: Sequence[str] = ()):
        self.stop = tuple(s for s in stop if s)
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.buffer = ""
        self.started = False
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped or not piece:
            return ""
        if not self.started:
            piece = piece.lstrip()
            self.started = bool(piece)
        self.buffer += piece
        text, found = cut_at_stop(self.buffer, self.stop)
        if found:
            self.stopped, self.buffer = True, ""
            return text.rstrip()
        cut = len(self.buffer) - self.hold
        out, self.buffer = self.buffer[:cut] if cut > 0 else "", self.buffer[cut:] if cut > 0 else self.buffer
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer.rstrip()), ""
        return out


class RowStopper(StoppingCriteria):
    """Per-row stopping inside one batched `generate`: row i stops after `max_new_tokens[i]` tokens,
    at one of its stop strings, or when its `cancelled` event is set. Stopped rows are padded by
    transformers while the others go on, so each row decodes exactly as it would alone."""

    def __init__(self, max_new_tokens: list[int], stops: list[tuple[str, ...]], cancelled: list[threading.Event | None], decode: Callable[[list[int]], str]):
        self.max_new_tokens, self.stops, self.cancelled, self.decode = max_new_tokens, stops, cancelled, decode

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        # With `inputs_embeds` generation, `input_ids` holds only the new tokens. A stop string found
        # now ends in the newest token (else the row stopped earlier), so only the tail is decoded,
        # not the whole answer at every step.
        length = input_ids.shape[1]
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row in range(input_ids.shape[0]):
            event = self.cancelled[row]
            if length >= self.max_new_tokens[row] or (event is not None and event.is_set()):
                done[row] = True
            elif self.stops[row]:
                tail = max(len(stop) for stop in self.stops[row]) + TAIL_MARGIN
                done[row] = cut_at_stop(self.decode(input_ids[row, -tail:].tolist()), self.stops[row])[1]
        return done
