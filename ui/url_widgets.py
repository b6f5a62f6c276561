"""Widgets whose values live in the address bar, so that a reload or a shared link reopens the
view as it was (issue 23: a URL holds everything that decides a result).

A link's text is outside input: each parameter is parsed into a value its widget accepts (one of
its options, a number within its bounds) or reported as not understood and ignored."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lenscape.ui.common import from_url, to_url


def url_widget(
    param: str | None,
    key: str,
    draw: Callable[[], Any],
    default: Any,
    parse: Callable[[str], Any] = str,
    text: Callable[[Any], str] = str,
) -> Any:
    """Draw widget `key` with its value in the address bar as ?param= (left out at `default`): a
    link sets it once per value, and a change rewrites the link. `parse` turns the link's text into
    a value the widget accepts or raises ValueError. Without `param`, just the widget."""
    if param is None:
        return draw()
    from_url(param, key, parse)
    value = draw()
    to_url(param, key, None if _same(value, default) else text(value))
    return value


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return list(value) == list(default)
    return value == default


def one_of(options: Sequence[Any]) -> Callable[[str], Any]:
    """The option whose text is the link's."""
    by_text = {str(o): o for o in options}

    def parse(text: str) -> Any:
        if text not in by_text:
            raise ValueError(f"not one of {list(by_text)[:12]}")
        return by_text[text]

    return parse


def some_of(options: Sequence[Any]) -> Callable[[str], list]:
    """Comma-separated options, in the link's order."""
    one = one_of(options)
    return lambda text: [one(t) for t in text.split(",") if t]


def comma(values: Sequence[Any]) -> str:
    return ",".join(map(str, values))


def number_in(lo: float, hi: float | None, kind: type = int) -> Callable[[str], Any]:
    """A number of `kind` in [lo, hi] (what a number input or slider with those bounds accepts; `hi`
    None: no upper bound)."""

    def parse(text: str) -> Any:
        value = kind(text)
        if not lo <= value <= (value if hi is None else hi):
            raise ValueError(f"outside [{lo}, {hi}]")
        return value

    return parse


def pair_in(lo: float, hi: float) -> Callable[[str], tuple[float, float]]:
    """A range slider's (low, high) as "low,high"."""

    def parse(text: str) -> tuple[float, float]:
        a, b = (float(v) for v in text.split(","))
        if not lo <= a <= b <= hi:
            raise ValueError(f"not low,high within [{lo}, {hi}]")
        return a, b

    return parse


def flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError("expected 0 or 1")
    return text == "1"


def flag_text(value: bool) -> str:
    return "1" if value else "0"


def coded(codes: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[Any], str]]:
    """(parse, text) for a widget whose options have short codes in the link ({code: option})."""
    code = one_of(list(codes))
    back = {v: k for k, v in codes.items()}
    return (lambda text: codes[code(text)]), back.__getitem__
