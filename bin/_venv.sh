# Sourced by bin/twin and bin/test: creates .venv and installs the project when pyproject.toml changed.
# Usage: ensure_venv EXTRAS   (EXTRAS is "" or "dev")
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"

ensure_venv() {
    local extras="$1"
    local python="${PYTHON:-python3}"
    if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
        echo "gpu-twin needs Python >= 3.11 (found: $("$python" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
        exit 1
    fi
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    local spec="$repo_root"
    [ -n "$extras" ] && spec="$repo_root[$extras]"
    local stamp="$venv/.installed-$extras"
    local want
    want="$(cat "$repo_root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "Installing gpu-twin${extras:+[$extras]} into $venv (first run only; takes a minute) ..." >&2
        "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
        "$venv/bin/python" -m pip install --quiet -e "$spec" >&2
        echo "$want" > "$stamp"
    fi
}
