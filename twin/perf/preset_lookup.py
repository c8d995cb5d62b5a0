"""Find a preset by name: case-insensitive, `_` accepted for `-`; unknown names list the closest ones."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TypeVar

from twin.errors import UnknownPresetError

T = TypeVar("T")

# How many close names an error message suggests, and how similar they must be (difflib ratio).
MAX_SUGGESTIONS = 3
SUGGESTION_CUTOFF = 0.6


def normalize_preset_name(name: str) -> str:
    """The canonical spelling of a preset name: stripped, lower case, `_` replaced by `-`."""
    return name.strip().lower().replace("_", "-")


def lookup(kind: str, name: str, table: Mapping[str, T]) -> T:
    """Return `table`'s entry for `name`, matched case-insensitively with `_` accepted for `-`.

    Raises `UnknownPresetError` naming the closest known names (all known names, sorted, when none is
    close) so that a typo in a scenario file can be fixed from the message alone.
    """
    if not isinstance(name, str):
        raise UnknownPresetError(f"{kind} preset name(={name!r}) must be a string.")
    by_canonical = {normalize_preset_name(key): key for key in table}
    wanted = normalize_preset_name(name)
    key = by_canonical.get(wanted)
    if key is not None:
        return table[key]
    close = difflib.get_close_matches(wanted, list(by_canonical), n=MAX_SUGGESTIONS, cutoff=SUGGESTION_CUTOFF)
    if close:
        raise UnknownPresetError(
            f"unknown {kind} preset {name!r}; closest: {', '.join(by_canonical[c] for c in close)}"
        )
    raise UnknownPresetError(f"unknown {kind} preset {name!r}; known: {', '.join(sorted(table))}")
