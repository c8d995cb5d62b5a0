"""A parser for the Prometheus text exposition format, version 0.0.4 (what dcgm-exporter serves).

Format reference: prometheus.io/docs/instrumenting/exposition_formats/ ("Text-based format"). Lines are
`# HELP name text`, `# TYPE name type`, other `#` comments, blank lines, and samples
`name{label="value",...} value [timestamp_ms]`. Label values escape `\\`, `\"` and `\n`; HELP text escapes
`\\` and `\n`. Values are Go floats including `NaN`, `+Inf`, `-Inf`; timestamps are integer milliseconds.

Any malformed line raises `SensorError` naming its 1-based line number and the offending text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sensors.errors import SensorError

METRIC_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# A Go `strconv.ParseFloat` decimal or one of the special values the format allows (case-insensitive, as Go).
# Python's float() would also accept '1_000' and surrounding whitespace, which the format does not.
FLOAT_TEXT: Final = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))"
)
TIMESTAMP_TEXT: Final = re.compile(r"-?[0-9]+")
METRIC_TYPES: Final = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})
BLANKS: Final = " \t"
LABEL_ESCAPES: Final[Mapping[str, str]] = {"\\": "\\", '"': '"', "n": "\n"}


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample line: metric name, labels, value, optional timestamp (ms since epoch), source line."""

    name: str
    labels: Mapping[str, str]
    value: float
    timestamp_ms: int | None
    line: int


@dataclass(frozen=True, slots=True)
class Exposition:
    """A parsed exposition: samples in document order, and the HELP and TYPE declared per metric family."""

    samples: tuple[Sample, ...]
    help: Mapping[str, str]
    types: Mapping[str, str]


def parse_exposition(text: str) -> Exposition:
    """Parse a whole exposition, or raise `SensorError` naming the first malformed line."""
    samples: list[Sample] = []
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        stripped = line.strip(BLANKS)
        if not stripped:
            continue
        if stripped.startswith("#"):
            _parse_comment(stripped, number, helps, types)
            continue
        samples.append(_parse_sample(line, number))
    return Exposition(tuple(samples), helps, types)


def _fail(number: int, line: str, why: str) -> SensorError:
    return SensorError(f"Prometheus text line {number}: {why}: {line!r}")


def _parse_comment(line: str, number: int, helps: dict[str, str], types: dict[str, str]) -> None:
    parts = line[1:].lstrip(BLANKS).split(None, 2)
    if len(parts) < 2 or parts[0] not in ("HELP", "TYPE"):
        return  # an ordinary comment
    keyword, name = parts[0], parts[1]
    if not METRIC_NAME.fullmatch(name):
        raise _fail(number, line, f"invalid metric name(={name!r}) in {keyword}")
    rest = parts[2] if len(parts) == 3 else ""
    if keyword == "HELP":
        if name in helps:
            raise _fail(number, line, f"second HELP for metric {name!r}")
        helps[name] = _unescape_help(rest)
        return
    metric_type = rest.strip(BLANKS)
    if metric_type not in METRIC_TYPES:
        raise _fail(number, line, f"metric type(={metric_type!r}) must be one of {sorted(METRIC_TYPES)}")
    if name in types:
        raise _fail(number, line, f"second TYPE for metric {name!r}")
    types[name] = metric_type


def _unescape_help(text: str) -> str:
    out: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(chars, "")
        # HELP escapes only '\\' and '\n'; any other backslash stays as written (Prometheus' parser does too).
        out.append({"\\": "\\", "n": "\n"}.get(nxt, "\\" + nxt))
    return "".join(out)


def _skip_blanks(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in BLANKS:
        pos += 1
    return pos


def _parse_sample(line: str, number: int) -> Sample:
    pos = _skip_blanks(line, 0)
    name_match = METRIC_NAME.match(line, pos)
    if name_match is None:
        raise _fail(number, line, "expected a metric name")
    name = name_match.group()
    pos = _skip_blanks(line, name_match.end())
    labels: dict[str, str] = {}
    if pos < len(line) and line[pos] == "{":
        pos = _parse_labels(line, pos + 1, number, labels)
    elif pos == name_match.end() and pos < len(line):
        raise _fail(number, line, f"unexpected character {line[pos]!r} after metric name")
    tokens = line[pos:].split()
    if not tokens or len(tokens) > 2:
        raise _fail(number, line, "expected 'value [timestamp]' after the metric name and labels")
    if not FLOAT_TEXT.fullmatch(tokens[0]):
        raise _fail(number, line, f"value(={tokens[0]!r}) is not a float")
    timestamp_ms: int | None = None
    if len(tokens) == 2:
        if not TIMESTAMP_TEXT.fullmatch(tokens[1]):
            raise _fail(number, line, f"timestamp(={tokens[1]!r}) is not an integer (ms)")
        timestamp_ms = int(tokens[1])
    return Sample(name, labels, float(tokens[0]), timestamp_ms, number)


def _parse_labels(line: str, pos: int, number: int, labels: dict[str, str]) -> int:
    """Parse `name="value",...}` starting after '{'; return the position after '}'."""
    while True:
        pos = _skip_blanks(line, pos)
        if pos < len(line) and line[pos] == "}":
            return pos + 1
        label_match = LABEL_NAME.match(line, pos)
        if label_match is None:
            raise _fail(number, line, f"expected a label name at column {pos + 1}")
        label = label_match.group()
        pos = _skip_blanks(line, label_match.end())
        if pos >= len(line) or line[pos] != "=":
            raise _fail(number, line, f"expected '=' after label {label!r}")
        pos = _skip_blanks(line, pos + 1)
        if pos >= len(line) or line[pos] != '"':
            raise _fail(number, line, f"expected '\"' to open the value of label {label!r}")
        value, pos = _parse_label_value(line, pos + 1, number, label)
        if label in labels:
            raise _fail(number, line, f"duplicate label {label!r}")
        labels[label] = value
        pos = _skip_blanks(line, pos)
        if pos < len(line) and line[pos] == ",":
            pos += 1
        elif pos >= len(line) or line[pos] != "}":
            raise _fail(number, line, f"expected ',' or '}}' after the value of label {label!r}")


def _parse_label_value(line: str, pos: int, number: int, label: str) -> tuple[str, int]:
    """Parse an escaped label value after its opening quote; return it and the position after the quote."""
    out: list[str] = []
    while pos < len(line):
        ch = line[pos]
        if ch == '"':
            return "".join(out), pos + 1
        if ch == "\\":
            escaped = LABEL_ESCAPES.get(line[pos + 1 : pos + 2])
            if escaped is None:
                raise _fail(number, line, f"invalid escape {line[pos : pos + 2]!r} in label {label!r}")
            out.append(escaped)
            pos += 2
            continue
        out.append(ch)
        pos += 1
    raise _fail(number, line, f"unterminated value of label {label!r}")
