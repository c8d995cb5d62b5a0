"""Checks shared by the predictors: required columns (naming renamed ones) and numeric columns."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.errors import MissingColumnsError, ModelInputError

FloatArray = npt.NDArray[np.float64]

# How alike a present column's name must be to a missing one to be suggested as its renamed form
# (difflib ratio; 0.6 is difflib.get_close_matches' own default).
RENAME_SIMILARITY: Final = 0.6


def require_frame(frame: object, what: str) -> pd.DataFrame:
    """`frame` if it is a DataFrame, else `ModelInputError` naming `what`."""
    if not isinstance(frame, pd.DataFrame):
        raise ModelInputError(f"{what}(={type(frame).__name__}) must be a pandas DataFrame.")
    return frame


def require_columns(frame: pd.DataFrame, required: Iterable[str], what: str) -> None:
    """Raise `MissingColumnsError` naming every missing column of `frame` (and a likely rename of each)."""
    present = [str(c) for c in frame.columns]
    lowered = {c.lower(): c for c in present}
    missing = [c for c in required if c not in frame.columns]
    if not missing:
        return
    hints = []
    for name in missing:
        match = lowered.get(name.lower()) or next(
            iter(difflib.get_close_matches(name, present, n=1, cutoff=RENAME_SIMILARITY)), None
        )
        hints.append(f"{name!r} (found {match!r}: renamed?)" if match else repr(name))
    raise MissingColumnsError(
        f"{what} is missing column(s) {', '.join(hints)}; it needs {', '.join(required)}.", missing
    )


def numeric_matrix(frame: pd.DataFrame, columns: Sequence[str], what: str) -> FloatArray:
    """`frame[columns]` as a float matrix (NaN allowed); `ModelInputError` names a non-numeric column."""
    out = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = values.isna() & frame[name].notna()
        if bad.any():
            example = frame[name][bad].iloc[0]
            raise ModelInputError(f"{what} column {name!r} holds a non-number (={example!r}).")
        out[:, j] = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def check_quantiles(quantiles: Sequence[float]) -> tuple[float, ...]:
    """Quantiles as a sorted tuple in (0, 1) that contains the median, else `ModelInputError`."""
    try:
        values = tuple(float(q) for q in quantiles)
    except (TypeError, ValueError):
        raise ModelInputError(f"quantiles(={quantiles!r}) must be numbers in (0, 1).") from None
    if not values or any(not 0.0 < q < 1.0 for q in values) or len(set(values)) != len(values):
        raise ModelInputError(f"quantiles(={quantiles!r}) must be distinct numbers in (0, 1).")
    if 0.5 not in values:
        raise ModelInputError(f"quantiles(={quantiles!r}) must contain 0.5 (predict returns the median).")
    return tuple(sorted(values))
