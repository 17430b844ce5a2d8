"""Waiting before trying again."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Exponential backoff with jitter: uniform in [delay/2, delay], delay = initial * 2^attempt
    capped at `maximum`, so many clients retrying at once spread out."""
    delay = min(maximum, initial * 2 ** min(attempt, 60))
    return random.uniform(delay / 2, delay)
