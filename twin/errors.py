"""The twin's error root (DESIGN §2: two shallow roots, `SensorError` lives in `sensors`)."""

from __future__ import annotations


class TwinError(Exception):
    """Root of every error the twin raises on purpose."""


class ScenarioError(TwinError, ValueError):
    """A scenario (or one of its fields) is invalid; the message names the field and the value."""


class UnknownPresetError(ScenarioError, KeyError):
    """A preset name is not known; the message lists the closest names."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0]) if self.args else ""
