"""Sampling options a caller may set (SDK and API), validated once, with OpenAI's ranges.

Greedy (temperature 0) is the default: grounded answers should be reproducible. A temperature above 0 samples;
`seed` makes a sampled answer reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from assistant.errors import InputError

MAX_STOP = 4  # OpenAI's limit on stop sequences


@dataclass(frozen=True)
class Sampling:
    temperature: float | None = None        # None: the domain's default (greedy unless its domain.toml says)
    top_p: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    @classmethod
    def of(cls, *, temperature=None, top_p=None, stop=None, seed=None, presence_penalty=None,
           frequency_penalty=None) -> Sampling:
        """Validated options (None = the default); InputError naming the option otherwise."""
        def number(name, value, low, high, default, low_open=False):
            if value is None:
                return default
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"{name} must be a number, got {value!r}")
            if not (low < value <= high if low_open else low <= value <= high):
                raise InputError(f"{name} must be {'>' if low_open else '>='} {low} and <= {high}, got {value}")
            return float(value)

        if isinstance(stop, str):
            stop = [stop]
        stop = list(stop or [])
        if len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
            raise InputError(f"stop must be a non-empty string or a list of at most {MAX_STOP} of them")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InputError(f"seed must be an integer, got {seed!r}")
        return cls(temperature=number("temperature", temperature, 0, 2, None),
                   top_p=number("top_p", top_p, 0, 1, 1.0, low_open=True), stop=tuple(stop), seed=seed,
                   presence_penalty=number("presence_penalty", presence_penalty, -2, 2, 0.0),
                   frequency_penalty=number("frequency_penalty", frequency_penalty, -2, 2, 0.0))
