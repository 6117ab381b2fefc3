# Sourced by the scripts: installs the Debian packages the network-namespace
# test needs (`ip` from iproute2, `nft` from nftables) when they are missing.
ensure_net_tools() {
  local missing=()
  command -v ip >/dev/null || missing+=(iproute2)
  command -v nft >/dev/null || missing+=(nftables)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  echo "==> installing ${missing[*]} (apt-get)"
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } \
    || { echo "could not install ${missing[*]}; the network-namespace test needs them" >&2; return 1; }
}
