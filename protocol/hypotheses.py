"""Live transcription: which words of the growing segment's hypotheses are sent.

While the user speaks, the STT is asked for a hypothesis of the segment every few hundred
ms. Hypotheses of a growing segment revise their last words, and transcription deltas are
append-only, so only the words that two successive hypotheses agree on are sent, and only
when they extend what was sent. The final transcript (``...transcription.completed``) may
still revise any of them.
"""

from __future__ import annotations


def stable_prefix(previous: str, current: str) -> str:
    """The words two successive partial hypotheses agree on, from the start."""
    agreed: list[str] = []
    for a, b in zip(previous.split(), current.split(), strict=False):
        if a != b:
            break
        agreed.append(a)
    return " ".join(agreed)


def confirmed_growth(sent: str, previous: str, current: str) -> str:
    """The text to send now, given what was already sent and two successive hypotheses.

    Only words both hypotheses agree on are sent, and only when they extend what was sent
    (transcription deltas are append-only).
    """
    agreed = stable_prefix(previous, current)
    if not agreed or not agreed.startswith(sent.strip()) or len(agreed) <= len(sent.strip()):
        return ""
    growth = agreed[len(sent.strip()) :]
    return growth if sent else growth.lstrip()
