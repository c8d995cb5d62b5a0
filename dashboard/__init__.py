"""The Streamlit dashboard (built under the dashboard issue)."""
