"""Broker URLs: `mqtt://[user[:password]@]host[:port]` and `mqtts://…` as a validated value type.

`parse_broker_url("mqtts://node-07:s%40cret@broker.lab:8884")` gives a frozen `BrokerUrl` with the
credentials percent-decoded (RFC 3986 §2.1), the port defaulted (1883 for mqtt, 8883 for mqtts, the IANA
registrations) and `tls` set for mqtts. IPv6 hosts are written in brackets (`mqtt://[::1]:1883`) and
stored without them. Every error is a `ContractError` naming the offending part; no message and no
`repr` ever contains the password, and `redacted()` gives the URL to put in logs (password as `***`).

A raw `@` in the password is tolerated (the host is whatever follows the *last* `@`), but `:`, `/`, `?`,
`#`, `%` and `@` in credentials should be percent-encoded; `str(url)` always writes them encoded, so
`parse_broker_url(str(url)) == url`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, unquote

from sensors.errors import ContractError

__all__ = ["DEFAULT_PORTS", "BrokerUrl", "parse_broker_url"]

# IANA service names "mqtt" (1883/tcp) and "secure-mqtt" (8883/tcp).
DEFAULT_PORTS: Final[dict[str, int]] = {"mqtt": 1883, "mqtts": 8883}
REDACTED: Final = "***"
_MAX_HOSTNAME_LEN: Final = 253  # RFC 1035 §2.3.4 (as text, without the trailing dot)
# Hostname labels: letters, digits, '-' (RFC 1123 §2.1) and '_' (Docker Compose service names use it).
_LABEL: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_BAD_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """Where and how to reach an MQTT broker. `host` is a hostname, an IPv4 or a bare IPv6 address."""

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.scheme not in DEFAULT_PORTS:
            raise ContractError(f"scheme(={self.scheme!r}) must be one of {sorted(DEFAULT_PORTS)}.")
        _check_host(self.host)
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65_535:
            raise ContractError(f"port(={self.port!r}) must be an integer in 1..65535.")
        if self.username is not None:
            _check_credential("username", self.username)
            if self.username == "":
                raise ContractError("username(='') must be non-empty when given (omit it instead).")
        if self.password is not None:
            _check_credential("password", self.password)
            if self.username is None:
                raise ContractError("password is given without a username (MQTT 3.1.1 §3.1.2.9 forbids it).")

    @property
    def tls(self) -> bool:
        """True for `mqtts`: the connection must use TLS."""
        return self.scheme == "mqtts"

    @property
    def netloc_host(self) -> str:
        """The host as written in a URL: IPv6 addresses in brackets."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def __str__(self) -> str:
        """The canonical URL, credentials percent-encoded, port always written (contains the password)."""
        return self._format(None if self.password is None else quote(self.password, safe=""))

    def __repr__(self) -> str:
        return f"BrokerUrl({self.redacted()!r})"

    def redacted(self) -> str:
        """The URL for logs: like `str(self)` with the password replaced by `***`."""
        return self._format(None if self.password is None else REDACTED)

    def _format(self, password_text: str | None) -> str:
        userinfo = ""
        if self.username is not None:
            userinfo = quote(self.username, safe="")
            if password_text is not None:
                userinfo += f":{password_text}"
            userinfo += "@"
        return f"{self.scheme}://{userinfo}{self.netloc_host}:{self.port}"


def parse_broker_url(text: str) -> BrokerUrl:
    """Parse `mqtt://[user[:password]@]host[:port]` or `mqtts://…`; a `ContractError` names the bad part."""
    if not isinstance(text, str):
        raise ContractError(f"broker URL must be a string, not {type(text).__name__}.")
    shown = _mask_userinfo(text)
    stripped = text.strip()
    match = _SCHEME.match(stripped)
    if match is None:
        raise ContractError(f"broker URL(={shown!r}) must start with 'mqtt://' or 'mqtts://'.")
    scheme = match.group(1).lower()
    if scheme not in DEFAULT_PORTS:
        raise ContractError(
            f"scheme(={match.group(1)!r}) in broker URL(={shown!r}) must be 'mqtt' or 'mqtts'."
        )
    rest = stripped[match.end() :]
    for mark, part in (("?", "query"), ("#", "fragment")):
        at = rest.rfind("@")
        if mark in rest[at + 1 :]:
            raise ContractError(f"broker URL(={shown!r}) must not have a {part} ('{mark}…').")
    at = rest.rfind("@")
    userinfo, hostport = (rest[:at], rest[at + 1 :]) if at >= 0 else (None, rest)
    slash = hostport.find("/")
    if slash >= 0:
        if hostport[slash:] != "/":
            raise ContractError(
                f"path(={hostport[slash:]!r}) in broker URL(={shown!r}) must be empty or '/'."
            )
        hostport = hostport[:slash]
    host, port = _split_host_port(hostport, DEFAULT_PORTS[scheme], shown)
    username = password = None
    if userinfo is not None:
        raw_user, colon, raw_password = userinfo.partition(":")
        username = _decode("username", raw_user, shown)
        password = _decode("password", raw_password, shown) if colon else None
        if username == "":
            raise ContractError(f"username in broker URL(={shown!r}) is empty; omit the '@' or name a user.")
    return BrokerUrl(scheme=scheme, host=host, port=port, username=username, password=password)


def _split_host_port(hostport: str, default_port: int, shown: str) -> tuple[str, int]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ContractError(f"host(={hostport!r}) in broker URL(={shown!r}) opens '[' without ']'.")
        host, after = hostport[1:end], hostport[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ContractError(
                f"host(={hostport[: end + 1]!r}) in broker URL(={shown!r}) is not an IPv6 address."
            ) from None
        if after and not after.startswith(":"):
            raise ContractError(f"text after the host(={after!r}) in broker URL(={shown!r}) must be ':PORT'.")
        port_text = after[1:] if after else None
    else:
        if hostport.count(":") > 1:
            raise ContractError(
                f"host(={hostport!r}) in broker URL(={shown!r}) has several ':'; write an IPv6 address "
                "in brackets, e.g. mqtt://[::1]:1883."
            )
        host, colon, port_text_raw = hostport.partition(":")
        port_text = port_text_raw if colon else None
    if host == "":
        raise ContractError(f"host in broker URL(={shown!r}) is empty.")
    _check_host(host, shown)
    if port_text is None:
        return host, default_port
    if not port_text.isascii() or not port_text.isdigit():
        raise ContractError(f"port(={port_text!r}) in broker URL(={shown!r}) must be digits 1..65535.")
    port = int(port_text)
    if not 1 <= port <= 65_535:
        raise ContractError(f"port(={port}) in broker URL(={shown!r}) must be in 1..65535.")
    return host, port


def _check_host(host: str, shown: str | None = None) -> None:
    where = f" in broker URL(={shown!r})" if shown is not None else ""
    if not isinstance(host, str) or host == "":
        raise ContractError(f"host(={host!r}){where} must be a non-empty hostname or IP address.")
    if "%" in host:
        raise ContractError(f"host(={host!r}){where}: IPv6 zone identifiers ('%…') are not supported.")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ContractError(f"host(={host!r}){where} contains ':' but is not an IPv6 address.") from None
        return
    labels = host.split(".")
    if all(label.isascii() and label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ContractError(f"host(={host!r}){where} looks numeric but is not an IPv4 address.") from None
        return
    if len(host) > _MAX_HOSTNAME_LEN or not all(_LABEL.fullmatch(label) for label in labels):
        raise ContractError(
            f"host(={host!r}){where} must be an IP address or a hostname of dot-separated labels of "
            "letters, digits, '-' and '_' (at most 63 characters each, 253 in all)."
        )


def _check_credential(name: str, value: str) -> None:
    if not isinstance(value, str):
        raise ContractError(f"{name} must be a string, not {type(value).__name__}.")
    if "\x00" in value:
        shown = repr(value) if name == "username" else "(hidden)"
        raise ContractError(f"{name}(={shown}) contains U+0000, which MQTT strings must not (§1.5.3).")


def _decode(name: str, raw: str, shown: str) -> str:
    """Percent-decode one credential strictly: malformed escapes and invalid UTF-8 are errors."""
    secret = name == "password"
    part = "(hidden)" if secret else repr(raw)
    if _BAD_PERCENT.search(raw):
        raise ContractError(
            f"{name}(={part}) in broker URL(={shown!r}) has a '%' not followed by two hex digits; "
            "write '%' as %25."
        )
    try:
        value = unquote(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ContractError(
            f"{name}(={part}) in broker URL(={shown!r}) percent-decodes to invalid UTF-8."
        ) from None
    _check_credential(name, value)
    return value


def _mask_userinfo(text: str) -> str:
    """The text with any password hidden, for error messages: `mqtt://user:***@host`."""
    if not isinstance(text, str):
        return repr(text)
    scheme_end = text.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    at = text.rfind("@")
    if at < start:
        return text
    userinfo = text[start:at]
    user, colon, _password = userinfo.partition(":")
    return text[:start] + user + (f":{REDACTED}" if colon else "") + text[at:]
