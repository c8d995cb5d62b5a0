"""`twin dashboard`: the Streamlit command it runs, flags passed through, TWIN_DB at the edge."""

from __future__ import annotations

import io

import pytest

from dashboard.settings import DashboardSettings, parse_args
from twin import cli_dashboard
from twin.cli import main


def _command(argv: list[str]) -> list[str]:
    out = io.StringIO()
    assert main(["dashboard", "--print-command", *argv], out=out) == 0
    return out.getvalue().split()


def test_binds_localhost_and_passes_the_settings_after_the_separator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWIN_DB", "sqlite:///from-env.db")
    command = _command(["--port", "8600", "--sim-spec", "spec.json", "--refresh-s", "2"])
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4] == str(cli_dashboard.APP_PATH)
    options = dict(
        zip(command[5 : command.index("--")][::2], command[6 : command.index("--")][::2], strict=True)
    )
    assert options["--server.address"] == "127.0.0.1" and options["--server.port"] == "8600"
    assert options["--server.headless"] == "true" and options["--browser.gatherUsageStats"] == "false"
    settings = parse_args(command[command.index("--") + 1 :])
    assert settings == DashboardSettings(db_url="sqlite:///from-env.db", sim_spec="spec.json", refresh_s=2.0)


def test_host_and_db_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWIN_DB", "sqlite:///from-env.db")
    command = _command(["--db", "sqlite:///flag.db", "--host", "0.0.0.0"])
    assert command[command.index("--server.address") + 1] == "0.0.0.0"
    assert parse_args(command[command.index("--") + 1 :]).db_url == "sqlite:///flag.db"


def test_bad_values_are_refused() -> None:
    assert main(["dashboard", "--port", "70000"], out=io.StringIO()) == 2
    with pytest.raises(SystemExit):
        main(["dashboard", "--refresh-s", "0"], out=io.StringIO())
    with pytest.raises(ValueError, match="projection_replications"):
        parse_args(["--projection-replications", "0"])
    with pytest.raises(ValueError, match="refresh-s"):
        parse_args(["--refresh-s", "soon"])
