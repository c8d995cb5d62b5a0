"""Human formats: units, magnitudes, missing values."""

from __future__ import annotations

import math

import pytest

from dashboard.formatting import (
    MISSING,
    currency_symbol,
    fmt_age,
    fmt_count,
    fmt_duration,
    fmt_energy_kwh,
    fmt_gib,
    fmt_money,
    fmt_params,
    fmt_pct,
    fmt_power,
    fmt_step_time,
    fmt_tokens,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [(80 * 2**30, "80.0 GiB"), (1.5 * 2**30, "1.5 GiB"), (2 * 2**40, "2.0 TiB"), (0, "0.0 GiB")],
)
def test_gib(value: float, text: str) -> None:
    assert fmt_gib(value) == text


@pytest.mark.parametrize(
    ("watts", "text"), [(612.4, "612 W"), (612_500.0, "612.5 kW"), (1_170_000.0, "1.17 MW"), (0.0, "0 W")]
)
def test_power_picks_the_unit(watts: float, text: str) -> None:
    assert fmt_power(watts) == text


@pytest.mark.parametrize(
    ("kwh", "text"), [(576.0, "576.0 kWh"), (2_500.0, "2.50 MWh"), (7_390_000.0, "7.39 GWh")]
)
def test_energy_picks_the_unit(kwh: float, text: str) -> None:
    assert fmt_energy_kwh(kwh) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250 ms"),
        (9.775, "9.78 s"),
        (42.0, "42.0 s"),
        (95.0, "1.6 min"),
        (7_200.0, "2.0 h"),
        (180.5 * 86_400, "180.5 days"),
        (3 * 365.25 * 86_400, "3.0 years"),
        (math.inf, "never"),
    ],
)
def test_duration(seconds: float, text: str) -> None:
    assert fmt_duration(seconds) == text


def test_money_uses_the_symbol_and_abbreviates_millions() -> None:
    assert fmt_money(2_410_635.32) == "€2,410,635"
    assert fmt_money(3.39312) == "€3.39"
    assert fmt_money(13_500_000.0) == "€13.5 M"
    assert fmt_money(12.5, "USD") == "$12.50"
    assert fmt_money(1_000.0, "CHF") == "1,000 CHF"
    assert fmt_money(-5.0) == "-€5.00"
    assert currency_symbol("eur") == "€"


def test_step_time_percent_counts_tokens_params() -> None:
    assert fmt_step_time(9.775) == "9.78 s"
    assert fmt_step_time(0.0123) == "12.3 ms"
    assert fmt_pct(0.412) == "41.2 %"
    assert fmt_count(16_384) == "16,384"
    assert fmt_tokens(1.5e13) == "15.0 T"
    assert fmt_tokens(64e6) == "64.0 M"
    assert fmt_params(70.6e9) == "70.6B"


def test_age() -> None:
    assert fmt_age(9.3) == "9 s ago"
    assert fmt_age(95.0) == "1.6 min ago"
    assert fmt_age(-2.0) == "0 s ago"  # a clock a little ahead of the sample
    assert fmt_age(None) == "never"


@pytest.mark.parametrize(
    "fn", [fmt_gib, fmt_power, fmt_energy_kwh, fmt_money, fmt_pct, fmt_count, fmt_tokens, fmt_step_time]
)
def test_missing_values_show_a_dash(fn: object) -> None:
    assert callable(fn)
    assert fn(None) == MISSING
    assert fn(math.nan) == MISSING
    assert fmt_duration(None) == MISSING
    assert fmt_duration(math.nan) == MISSING
