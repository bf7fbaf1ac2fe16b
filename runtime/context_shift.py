"""Context shift: what a sequence keeps when it outgrows the compiled context.

Off by default (an over-long prompt is an error, a full context ends generation with "length").
When on, a sequence that no longer fits keeps its first `keep` tokens and the most recent
(max_seq_len - keep) // 2 tokens; the engine re-prefills those into the slot from position 0.
Positions are renumbered, so the cache is recomputed rather than the cached keys re-rotated:
afterwards the model is exactly a fresh one that was given the kept tokens.
"""
from __future__ import annotations

from ..errors import IngotError


def check_keep(keep, max_seq_len: int, name: str = "keep") -> None:
    """`keep` must leave room for at least one recent token and one new one."""
    top = max_seq_len - 2
    if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= top:
        raise IngotError(f"{name} must be an integer from 0 to {top} (the compiled context of "
                         f"{max_seq_len} tokens less 2), got {keep!r}")


def default_keep(prompt: list, bos_id) -> int:
    """Without an explicit keep: the BOS token, when the prompt starts with one."""
    return 1 if bos_id is not None and prompt and prompt[0] == bos_id else 0


def recent(keep: int, max_seq_len: int) -> int:
    """How many of the newest tokens a shift keeps after the first `keep`."""
    return (max_seq_len - keep) // 2


def shifted(tokens: list, keep: int, max_seq_len: int) -> list:
    """The tokens a shift keeps: the first `keep` and the most recent ones (see `recent`)."""
    r = recent(keep, max_seq_len)
    return list(tokens[:keep]) + list(tokens[len(tokens) - r:])
