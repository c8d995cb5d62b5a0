"""Human formats for the dashboard: GiB, W/kW/MW, kWh/MWh/GWh, durations up to years, money with its symbol.

Every function takes SI units (bytes, W, s, kWh, a currency amount) and returns a short string; a missing or
non-finite value becomes `MISSING`, so a table cell never shows `nan`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

MISSING: Final = "—"
BYTES_PER_GIB: Final = 2**30
BYTES_PER_TIB: Final = 2**40
W_PER_KW: Final = 1_000.0
W_PER_MW: Final = 1_000_000.0
KWH_PER_MWH: Final = 1_000.0
KWH_PER_GWH: Final = 1_000_000.0
SECONDS_PER_MINUTE: Final = 60.0
SECONDS_PER_HOUR: Final = 3_600.0
SECONDS_PER_DAY: Final = 86_400.0
# A Julian year (IAU): 365.25 days; used only to print very long durations.
SECONDS_PER_YEAR: Final = 365.25 * SECONDS_PER_DAY
# Symbols of the currencies a scenario may name (ISO 4217 code → symbol); others print their code.
CURRENCY_SYMBOLS: Final[Mapping[str, str]] = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "CNY": "¥"}


def _finite(value: float | int | None) -> bool:
    return value is not None and not isinstance(value, bool) and math.isfinite(value)


def fmt_gib(n_bytes: float | int | None, digits: int = 1) -> str:
    """Bytes as GiB (TiB from 1,024 GiB): `fmt_gib(80 * 2**30) == "80.0 GiB"`."""
    if not _finite(n_bytes):
        return MISSING
    assert n_bytes is not None
    if abs(n_bytes) >= BYTES_PER_TIB:
        return f"{n_bytes / BYTES_PER_TIB:,.{digits}f} TiB"
    return f"{n_bytes / BYTES_PER_GIB:,.{digits}f} GiB"


def fmt_power(watts: float | int | None) -> str:
    """Power in W below 1 kW, kW below 1 MW, else MW: `fmt_power(612_500) == "612.5 kW"`."""
    if not _finite(watts):
        return MISSING
    assert watts is not None
    magnitude = abs(watts)
    if magnitude >= W_PER_MW:
        return f"{watts / W_PER_MW:,.2f} MW"
    if magnitude >= W_PER_KW:
        return f"{watts / W_PER_KW:,.1f} kW"
    return f"{watts:,.0f} W"


def fmt_energy_kwh(kwh: float | int | None) -> str:
    """Energy in kWh, MWh from 1,000 kWh, GWh from 1,000 MWh: `fmt_energy_kwh(2_500) == "2.50 MWh"`."""
    if not _finite(kwh):
        return MISSING
    assert kwh is not None
    magnitude = abs(kwh)
    if magnitude >= KWH_PER_GWH:
        return f"{kwh / KWH_PER_GWH:,.2f} GWh"
    if magnitude >= KWH_PER_MWH:
        return f"{kwh / KWH_PER_MWH:,.2f} MWh"
    return f"{kwh:,.1f} kWh"


def fmt_duration(seconds: float | int | None) -> str:
    """A duration in the largest sensible unit: ms, s, min, h, days, years.

    `fmt_duration(math.inf) == "never"` (the twin's time to train when failures outpace progress).
    """
    if seconds is None or isinstance(seconds, bool):
        return MISSING
    if math.isinf(seconds) and seconds > 0:
        return "never"
    if not math.isfinite(seconds):
        return MISSING
    magnitude = abs(seconds)
    if magnitude < 1.0:
        return f"{seconds * 1e3:.0f} ms"
    if magnitude < SECONDS_PER_MINUTE:
        return f"{seconds:.2f} s" if magnitude < 10 else f"{seconds:.1f} s"
    if magnitude < SECONDS_PER_HOUR:
        return f"{seconds / SECONDS_PER_MINUTE:.1f} min"
    if magnitude < SECONDS_PER_DAY:
        return f"{seconds / SECONDS_PER_HOUR:.1f} h"
    if magnitude < SECONDS_PER_YEAR:
        return f"{seconds / SECONDS_PER_DAY:,.1f} days"
    return f"{seconds / SECONDS_PER_YEAR:,.1f} years"


def fmt_step_time(seconds: float | int | None) -> str:
    """A step time with three significant figures: `fmt_step_time(9.775) == "9.78 s"`."""
    if not _finite(seconds):
        return MISSING
    assert seconds is not None
    if abs(seconds) < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def currency_symbol(currency: str | None) -> str:
    """`€` for EUR and the other known symbols; an unknown code is returned as given."""
    if not currency:
        return ""
    return CURRENCY_SYMBOLS.get(currency.upper(), currency)


def fmt_money(amount: float | int | None, currency: str | None = "EUR") -> str:
    """Money with its symbol and thousands separators, cents below 1,000, millions abbreviated from 10 M:
    `fmt_money(2_410_635) == "€2,410,635"`, `fmt_money(3.39312) == "€3.39"`,
    `fmt_money(56.3e6) == "€56.3 M"`."""
    if not _finite(amount):
        return MISSING
    assert amount is not None
    symbol = currency_symbol(currency)
    known = bool(currency) and currency is not None and currency.upper() in CURRENCY_SYMBOLS
    sign = "-" if amount < 0 else ""
    magnitude = abs(amount)
    if magnitude >= 1e10:
        number = f"{magnitude / 1e9:,.1f} bn"
    elif magnitude >= 1e7:
        number = f"{magnitude / 1e6:,.1f} M"
    elif magnitude >= 1_000:
        number = f"{magnitude:,.0f}"
    else:
        number = f"{magnitude:,.2f}"
    return f"{sign}{symbol}{number}" if known else f"{sign}{number} {symbol}".rstrip()


def fmt_pct(fraction: float | int | None, digits: int = 1) -> str:
    """A fraction as a percentage: `fmt_pct(0.412) == "41.2 %"`."""
    if not _finite(fraction):
        return MISSING
    assert fraction is not None
    return f"{fraction * 100:.{digits}f} %"


def fmt_count(value: float | int | None, digits: int = 0) -> str:
    """A number with thousands separators: `fmt_count(16384) == "16,384"`."""
    if not _finite(value):
        return MISSING
    assert value is not None
    return f"{value:,.{digits}f}"


def fmt_tokens(tokens: float | int | None) -> str:
    """A token count with SI prefix: `fmt_tokens(1.5e13) == "15.0 T"`."""
    if not _finite(tokens):
        return MISSING
    assert tokens is not None
    for scale, prefix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(tokens) >= scale:
            return f"{tokens / scale:,.1f} {prefix}"
    return f"{tokens:,.0f}"


def fmt_params(params: float | int | None) -> str:
    """A parameter count: `fmt_params(70.6e9) == "70.6B"`."""
    if not _finite(params):
        return MISSING
    assert params is not None
    if abs(params) >= 1e12:
        return f"{params / 1e12:.2f}T"
    if abs(params) >= 1e9:
        return f"{params / 1e9:.1f}B"
    return f"{params / 1e6:.0f}M"


def fmt_age(seconds: float | int | None) -> str:
    """How long ago, for "last seen": `fmt_age(9.3) == "9 s ago"`, `fmt_age(95) == "1.6 min ago"`,
    `fmt_age(None) == "never"`."""
    if seconds is None:
        return "never"
    if not math.isfinite(seconds):
        return MISSING
    seconds = max(0.0, float(seconds))
    if seconds < SECONDS_PER_MINUTE:
        return f"{seconds:.0f} s ago"
    return f"{fmt_duration(seconds)} ago"
