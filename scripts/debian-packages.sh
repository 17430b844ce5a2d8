# Sourced by scripts/asterisk.sh and scripts/citus-cluster.sh: install_packages installs the Debian
# packages of $PACKAGES that are missing (as root; otherwise it names them and stops). The caller
# defines log() and PACKAGES.
install_packages() {
  local missing=()
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    log "missing Debian packages: ${missing[*]} (install them as root)"
    exit 1
  fi
  log "installing ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}" >/dev/null
}
