"""The Streamlit app: four pages behind `st.navigation`. Run through `twin dashboard` (which passes the
settings as arguments after `--`), or in tests with `run(DashboardSettings(...), start_page=...)`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Final

import streamlit as st

from dashboard.settings import DashboardSettings, parse_args
from twin.store.urls import redact_url

# Page id → title (the id is also the URL path: /live, /whatif, /sweep, /forecasts).
PAGES: Final = {
    "live": "Live cluster",
    "whatif": "What-if",
    "sweep": "Layout sweep",
    "forecasts": "Forecasts",
}


def _page(settings: DashboardSettings, page_id: str) -> Callable[[], None]:
    def render() -> None:
        if page_id == "live":
            from dashboard import page_live

            page_live.render(settings)
        elif page_id == "whatif":
            from dashboard import page_whatif

            page_whatif.render(settings)
        elif page_id == "sweep":
            from dashboard import page_sweep

            page_sweep.render(settings)
        else:
            from dashboard import page_forecasts

            page_forecasts.render(settings)

    render.__name__ = f"page_{page_id}"
    return render


def run(settings: DashboardSettings, start_page: str = "live") -> None:
    """Build the navigation and run the selected page (`start_page` is the default one)."""
    if start_page not in PAGES:
        raise ValueError(f"start_page(={start_page!r}) must be one of {', '.join(PAGES)}.")
    st.set_page_config(page_title="gpu-twin", page_icon=":material/memory:", layout="wide")
    pages = [
        st.Page(_page(settings, page_id), title=title, url_path=page_id, default=page_id == start_page)
        for page_id, title in PAGES.items()
    ]
    st.navigation(pages).run()
    st.sidebar.caption(f"store: `{redact_url(settings.db_url)}` · cluster: `{settings.cluster}`")


def main(argv: list[str]) -> None:
    """The script's entry point: settings from the arguments after `--`; bad ones are shown, not raised."""
    try:
        settings = parse_args(argv)
    except ValueError as exc:
        st.set_page_config(page_title="gpu-twin", layout="wide")
        st.error(f"Invalid dashboard settings {argv!r}: {exc}")
        return
    run(settings)


if __name__ == "__main__":
    main(sys.argv[1:])
