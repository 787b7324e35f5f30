# Shared shell functions for the project's scripts: idempotent installs of what the portal and its
# tests need (Debian packages when running as root, a venv with the pinned Python packages).
# Source it; do not run it.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
APT_UPDATED=0

log() { printf '\033[1m[crater]\033[0m %s\n' "$*" >&2; }

# ensure_apt PKG...: install the Debian packages that are missing (root only; others get a hint).
ensure_apt() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        log "not root: please install ${missing[*]} (apt-get install ${missing[*]})"
        return 1
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
    log "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_venv: .venv with the pinned requirements and the project installed editable.
ensure_venv() {
    local py="${PYTHON:-python3}"
    if [ ! -x "$VENV/bin/python" ]; then
        if ! "$py" -m venv "$VENV" 2>/dev/null; then
            ensure_apt python3-venv && "$py" -m venv "$VENV"
        fi
    fi
    local stamp="$VENV/.crater-requirements"
    local want
    want="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "installing Python packages into .venv"
        "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements.txt"
        "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e "$ROOT"
        echo "$want" >"$stamp"
    fi
}
