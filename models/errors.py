"""The predictors' input errors. `models` imports nothing else of ours (DESIGN §1), so these derive from
`ValueError` (the twin translates them at its edge); each message names the offending value."""

from __future__ import annotations

from collections.abc import Sequence


class ModelInputError(ValueError):
    """A frame or an argument given to a predictor is unusable; the message says what and why."""


class MissingColumnsError(ModelInputError, KeyError):
    """A frame lacks required columns; `missing` names them, the message suggests renamed ones."""

    def __init__(self, message: str, missing: Sequence[str]) -> None:
        super().__init__(message)
        self.missing = tuple(missing)

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0]) if self.args else ""


class InsufficientHistoryError(ModelInputError):
    """Too little data to fit or to predict; the message says how much is needed and how much there was."""
