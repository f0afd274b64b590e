"""A value scale that a view colours by: ``[lo, hi]`` and, optionally, the colours at its ends.

CircuitsVis's ``min_value``/``max_value``/``negative_color``/``positive_color``, as the views take them. The
scale is anchored at zero, as CircuitsVis's is: 0 is the background, ``hi`` is full ``positive`` and ``lo`` is
full ``negative`` (a value beyond an end gets that end's colour). Without colours the views' own maps are used
(sequential when ``lo >= 0``, else diverging, each sampled from its zero point). ``anchoredColormap`` in
``js/src/lib/colormap.ts`` builds the same 256-entry table; ``tests/fixtures/scale_vectors.json`` keeps the two
equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import ImageColor

from .picture import DIVERGING, SEQUENTIAL, colormap_lut

RGB = tuple[int, int, int]
BACKGROUND: dict[str, RGB] = {"light": (255, 255, 255), "dark": (20, 20, 20)}  # the maps' zero colours


def parse_color(value: Any, name: str) -> str:
    """A CSS colour (``"red"``, ``"#f00"``, ``"rgb(255, 0, 0)"``, ``"hsl(0, 100%, 50%)"``) as ``"#rrggbb"``, or ``""``
    for None. Transparency is not kept."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a CSS colour string such as 'red' or '#ff0000', got {type(value).__name__}")
    try:
        rgb = ImageColor.getrgb(value.strip())
    except ValueError:
        raise ValueError(
            f"{name} must be a CSS colour (a name such as 'red', '#rrggbb', 'rgb(r, g, b)' or 'hsl(h, s%, l%)'), "
            f"got {value!r}"
        ) from None
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def _hex_rgb(value: str) -> RGB:
    return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a 0-d tensor or array
            return _number(value.item(), name)
        raise TypeError(f"{name} must be a number or None, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


@dataclass(frozen=True)
class ColorScale:
    """``[lo, hi]`` and the end colours (``"#rrggbb"``, or ``""`` for the views' own maps)."""

    lo: float = 0.0
    hi: float = 1.0
    negative: str = ""
    positive: str = ""

    @classmethod
    def from_options(
        cls,
        min_value: Any = None,
        max_value: Any = None,
        negative_color: Any = None,
        positive_color: Any = None,
        *,
        default_lo: float,
        default_hi: float,
    ) -> ColorScale:
        """Check CircuitsVis-style options; a bound left None takes its default."""
        lo = _number(min_value, "min_value")
        hi = _number(max_value, "max_value")
        lo = default_lo if lo is None else lo
        hi = default_hi if hi is None else hi
        if not lo < hi:
            raise ValueError(f"min_value must be below max_value, got min_value={lo:g} and max_value={hi:g}")
        return cls(lo, hi, parse_color(negative_color, "negative_color"), parse_color(positive_color, "positive_color"))

    @property
    def diverging(self) -> bool:
        return self.lo < 0

    def lut(self, theme: str = "light") -> np.ndarray:
        """[256, 3] uint8 over ``[lo, hi]`` (index as ``picture.color_index``), as ``anchoredColormap`` builds it."""
        return anchored_lut(self.lo, self.hi, self.negative, self.positive, theme)

    def trait(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "negative": self.negative, "positive": self.positive}


DEFAULT_SCALE = ColorScale()  # 0..1 in the views' own sequential map


def _js_round(x: float) -> int:
    return math.floor(x + 0.5)


def anchored_lut(lo: float, hi: float, negative: str = "", positive: str = "", theme: str = "light") -> np.ndarray:
    """The zero-anchored table: entry ``i`` is the colour of ``v = lo + i / 255 * (hi - lo)``."""
    seq = colormap_lut(SEQUENTIAL[theme])  # type: ignore[index]
    div = colormap_lut(DIVERGING[theme])  # type: ignore[index]
    custom = bool(negative or positive)
    bg = BACKGROUND[theme]
    pos = _hex_rgb(positive) if positive else tuple(int(c) for c in (seq[255] if lo >= 0 else div[255]))
    neg = _hex_rgb(negative) if negative else tuple(int(c) for c in div[0])
    out = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        v = lo + (i / 255) * (hi - lo)
        if v >= 0:
            f = min(1.0, max(0.0, v / hi)) if hi > 0 else 0.0
        else:
            f = min(1.0, max(0.0, v / lo)) if lo < 0 else 0.0
        if custom:
            end = pos if v >= 0 else neg
            out[i] = [_js_round(bg[k] + (end[k] - bg[k]) * f) for k in range(3)]
        elif lo >= 0:
            out[i] = seq[_js_round(f * 255)]
        else:
            out[i] = div[_js_round((0.5 + 0.5 * f if v >= 0 else 0.5 - 0.5 * f) * 255)]
    return out
