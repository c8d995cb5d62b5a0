"""Tabular inputs: named numeric and categorical columns of a DataFrame → the float matrix the boosters take.

Categories are learnt at fit (sorted distinct values, as strings) and coded 0, 1, …; a category unseen at
fit, or a missing value, becomes NaN — which the boosters route like any missing value instead of
failing on a new QoS class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from models._validation import numeric_matrix, require_columns, require_frame
from models.errors import ModelInputError

FloatArray = npt.NDArray[np.float64]


def check_names(names: Sequence[str], what: str) -> tuple[str, ...]:
    """Column names as a tuple of distinct strings, else `ModelInputError` naming `what`."""
    if isinstance(names, str):
        raise ModelInputError(f"{what}(={names!r}) must be a sequence of column names, not one string.")
    out = tuple(names)
    if any(not isinstance(n, str) or not n for n in out) or len(set(out)) != len(out):
        raise ModelInputError(f"{what}(={names!r}) must be distinct, non-empty column names.")
    return out


def fit_categories(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The sorted distinct values (as strings) of each categorical column, missing values left out."""
    return {name: tuple(sorted({str(v) for v in frame[name].dropna().unique()})) for name in columns}


def encode(
    frame: pd.DataFrame,
    numeric: Sequence[str],
    categories: Mapping[str, Sequence[str]],
    what: str,
) -> FloatArray:
    """`frame`'s numeric columns then its categorical columns coded by `categories` (unknown → NaN)."""
    frame = require_frame(frame, what)
    require_columns(frame, [*numeric, *categories], what)
    X = numeric_matrix(frame, numeric, what)
    coded = []
    for name, levels in categories.items():
        values = frame[name].astype("string")
        known = values.where(values.isin(list(levels)))  # unseen → missing
        codes = pd.Categorical(known, categories=list(levels)).codes
        coded.append(np.where(codes < 0, np.nan, codes).astype(np.float64))
    return np.column_stack([X, *coded]) if coded else X
