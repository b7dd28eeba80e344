"""Typed failures a simulation run can end with.

Every failure carries the virtual time it happened at; the runner adds the seed and the exact
command that reproduces it (``repro``) before it reaches the user.
"""

from __future__ import annotations


class SimFailure(Exception):
    """A run found a bug: an invariant broke, progress stalled, or a core misbehaved."""

    kind = "failure"

    def __init__(self, message: str, *, time_us: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.time_us = time_us
        self.seed: int | None = None
        self.repro: str | None = None
        self.trace_tail: list[str] = []

    def __str__(self) -> str:
        at = f" at t={self.time_us / 1000:.3f} ms" if self.time_us is not None else ""
        out = f"{self.kind}: {self.message}{at}"
        if self.seed is not None:
            out += f"\n  seed: {self.seed}"
        if self.repro:
            out += f"\n  reproduce with: {self.repro}"
        return out


class InvariantViolation(SimFailure):
    """A safety checker saw a state that must never happen."""

    kind = "safety violation"


class LivenessFailure(SimFailure):
    """After the liveness phase healed a majority, no leader or no progress within the bound."""

    kind = "liveness failure"


class CodecMismatch(SimFailure):
    """A message did not survive its wire codec unchanged."""

    kind = "codec mismatch"


class CoreMisbehaved(SimFailure):
    """A core broke the driving contract (e.g. asks for a tick at the same instant forever) or
    raised where it must not (its own invariant assertion, a bug)."""

    kind = "core misbehaved"
