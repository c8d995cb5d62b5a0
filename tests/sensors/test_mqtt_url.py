"""Broker URLs (sensors.mqtt_url): defaults, credentials, IPv6, errors that name the part, redaction."""

from __future__ import annotations

import ipaddress
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensors.errors import ContractError
from sensors.mqtt_url import BrokerUrl, parse_broker_url

# --- examples ---------------------------------------------------------------------------------------


def test_mqtt_defaults_to_port_1883_without_tls() -> None:
    url = parse_broker_url("mqtt://broker.lab")
    assert url == BrokerUrl("mqtt", "broker.lab", 1883)
    assert not url.tls


def test_mqtts_defaults_to_port_8883_with_tls() -> None:
    url = parse_broker_url("mqtts://broker.lab")
    assert (url.port, url.tls) == (8883, True)


def test_explicit_port_and_trailing_slash() -> None:
    assert parse_broker_url("mqtt://10.0.0.5:1884/").port == 1884


def test_scheme_is_case_insensitive() -> None:
    assert parse_broker_url("MQTTS://h").scheme == "mqtts"


def test_credentials_are_percent_decoded() -> None:
    url = parse_broker_url("mqtt://node%2F07:p%40ss%3Aw%25rd@broker:1883")
    assert (url.username, url.password) == ("node/07", "p@ss:w%rd")


def test_raw_at_sign_in_password_splits_at_the_last_at() -> None:
    url = parse_broker_url("mqtt://twin:p@ss@broker")
    assert (url.username, url.password, url.host) == ("twin", "p@ss", "broker")


def test_username_without_password_and_empty_password_differ() -> None:
    assert parse_broker_url("mqtt://twin@h").password is None
    assert parse_broker_url("mqtt://twin:@h").password == ""


def test_ipv6_host_in_brackets_is_stored_bare() -> None:
    url = parse_broker_url("mqtt://[::1]:1884")
    assert (url.host, url.port, url.netloc_host) == ("::1", 1884, "[::1]")
    assert str(url) == "mqtt://[::1]:1884"


def test_str_writes_canonical_url_with_encoded_credentials() -> None:
    url = BrokerUrl("mqtts", "b", 8883, "a b", "x/y")
    assert str(url) == "mqtts://a%20b:x%2Fy@b:8883"


def test_redacted_hides_password_and_repr_uses_it() -> None:
    url = parse_broker_url("mqtt://twin:hunter2@broker:1883")
    assert url.redacted() == "mqtt://twin:***@broker:1883"
    assert "hunter2" not in repr(url)
    assert parse_broker_url("mqtt://twin@broker").redacted() == "mqtt://twin@broker:1883"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("broker:1883", "must start with 'mqtt://'"),
        ("http://broker", "scheme(='http')"),
        ("mqtt://", "host"),
        ("mqtt://broker:0", "port(=0)"),
        ("mqtt://broker:65536", "port(=65536)"),
        ("mqtt://broker:18x3", "port(='18x3')"),
        ("mqtt://broker:", "port(='')"),
        ("mqtt://broker/topic", "path(='/topic')"),
        ("mqtt://broker?x=1", "query"),
        ("mqtt://broker#frag", "fragment"),
        ("mqtt://::1", "IPv6 address in brackets"),
        ("mqtt://[::1", "without ']'"),
        ("mqtt://[1.2.3.4]:1", "not an IPv6 address"),
        ("mqtt://[::1]x", "must be ':PORT'"),
        ("mqtt://bro ker", "host(='bro ker')"),
        ("mqtt://-broker", "host(='-broker')"),
        ("mqtt://300.1.1.1", "not an IPv4 address"),
        ("mqtt://:pw@broker", "username"),
        ("mqtt://u%zz@broker", "username(='u%zz')"),
        ("mqtt://u%ff@broker", "invalid UTF-8"),
        ("mqtt://u%00@broker", "U+0000"),
    ],
)
def test_bad_urls_raise_contract_error_naming_the_part(text: str, names: str) -> None:
    with pytest.raises(ContractError, match=None) as caught:
        parse_broker_url(text)
    assert names in str(caught.value)


def test_bad_password_error_does_not_show_the_password() -> None:
    with pytest.raises(ContractError) as caught:
        parse_broker_url("mqtt://twin:sec%zzret@broker")
    assert "password" in str(caught.value)
    assert "sec" not in str(caught.value)


def test_constructor_validates_too() -> None:
    with pytest.raises(ContractError, match="port"):
        BrokerUrl("mqtt", "h", 70_000)
    with pytest.raises(ContractError, match="without a username"):
        BrokerUrl("mqtt", "h", 1883, None, "pw")
    with pytest.raises(ContractError, match="scheme"):
        BrokerUrl("tcp", "h", 1883)


# --- properties -------------------------------------------------------------------------------------

_label = st.from_regex(r"[a-z0-9_](?:[a-z0-9_-]{0,10}[a-z0-9_])?", fullmatch=True)
_hostname = (
    st.lists(_label, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda h: not all(part.isdigit() for part in h.split(".")))
)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(str)
_credential = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)


@st.composite
def broker_urls(draw: st.DrawFn) -> BrokerUrl:
    username = draw(st.none() | _credential.filter(bool))
    password = draw(st.none() | _credential) if username is not None else None
    return BrokerUrl(
        scheme=draw(st.sampled_from(["mqtt", "mqtts"])),
        host=draw(_hostname | _ipv4 | _ipv6),
        port=draw(st.integers(1, 65_535)),
        username=username,
        password=password,
    )


@given(broker_urls())
def test_str_round_trips(url: BrokerUrl) -> None:
    assert parse_broker_url(str(url)) == url


@given(broker_urls())
def test_redacted_parses_back_with_only_the_password_masked(url: BrokerUrl) -> None:
    back = parse_broker_url(url.redacted())
    assert (back.scheme, back.host, back.port, back.username) == (
        url.scheme,
        url.host,
        url.port,
        url.username,
    )
    assert back.password == (None if url.password is None else "***")


@given(broker_urls())
def test_omitted_port_means_the_scheme_default(url: BrokerUrl) -> None:
    text = str(url).rsplit(":", 1)[0]
    assert parse_broker_url(text).port == {"mqtt": 1883, "mqtts": 8883}[url.scheme]


@given(st.text(max_size=40))
def test_arbitrary_text_parses_or_raises_contract_error(text: str) -> None:
    try:
        url = parse_broker_url(text)
    except ContractError:
        return
    assert parse_broker_url(str(url)) == url


@given(broker_urls(), st.integers().filter(lambda p: not 1 <= p <= 65_535))
def test_out_of_range_ports_are_rejected(url: BrokerUrl, port: int) -> None:
    text = f"{url.scheme}://{url.netloc_host}:{port}"
    with pytest.raises(ContractError, match="port"):
        parse_broker_url(text)


@given(
    st.from_regex(r"PW[A-Za-z0-9!*()~:@]{4,16}", fullmatch=True),
    broker_urls(),
    st.sampled_from([":99999", ":-1", "/topic", "?q", " x"]),
)
def test_errors_never_contain_the_password(secret: str, url: BrokerUrl, bad_tail: str) -> None:
    # Valid credentials, then a bad port, path, query or host: the error names that part, never the
    # password (hosts are lowercase, so the uppercase "PW…" secret cannot appear by coincidence).
    for password in (secret, quote(secret, safe="")):
        text = f"{url.scheme}://user:{password}@{url.netloc_host}{bad_tail}"
        with pytest.raises(ContractError) as caught:
            parse_broker_url(text)
        assert secret not in str(caught.value)
        assert password not in str(caught.value)


def test_ipv6_host_is_valid_address_after_parse() -> None:
    assert ipaddress.ip_address(parse_broker_url("mqtts://[2001:db8::7]").host).version == 6
