#!/usr/bin/env bash
# A real Asterisk for the tests: build it from the vendored tarball (once, into a cache folder),
# then start/stop a test PBX with the project's configuration (tests/pbx/).
#
#   scripts/asterisk.sh build            build + install into $ASTERISK_PREFIX when missing
#   scripts/asterisk.sh start DIR        run a PBX whose every folder is under DIR (AMI on $AMI_PORT)
#   scripts/asterisk.sh stop DIR         stop it
#   scripts/asterisk.sh prefix           print where Asterisk is (or will be) installed
#
# Needs Debian's build packages (installed with apt-get when missing and we are root).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=20.20.1
TARBALL=${ASTERISK_TARBALL:-../shared/vendor/asterisk-$VERSION.tar.gz}
PREFIX=${ASTERISK_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/callhistory/asterisk-$VERSION}
PACKAGES=(build-essential pkg-config libedit-dev libjansson-dev libxml2-dev uuid-dev libsqlite3-dev
  libssl-dev libncurses-dev sip-tester)
MODULES=(chan_sip pbx_config pbx_spool app_dial app_queue app_playback app_echo app_mixmonitor
  app_verbose app_stack app_cdr app_chanspy app_followme app_voicemail app_senddtmf app_transfer
  func_callerid func_cdr func_channel func_strings func_logic cdr_csv cdr_manager
  res_musiconhold res_rtp_asterisk res_timing_timerfd res_sorcery_config res_sorcery_memory
  res_sorcery_astdb codec_ulaw codec_alaw format_wav format_pcm format_sln bridge_simple
  bridge_native_rtp bridge_holding bridge_builtin_features OPTIONAL_API)

log() { echo "asterisk.sh: $*" >&2; }

# shellcheck source=scripts/debian-packages.sh
source scripts/debian-packages.sh

build() {
  if [ -x "$PREFIX/sbin/asterisk" ]; then
    log "Asterisk $VERSION is installed in $PREFIX"
    return 0
  fi
  install_packages
  [ -f "$TARBALL" ] || { log "no Asterisk source at $TARBALL"; exit 1; }
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"; trap - RETURN' RETURN  # once: not again when the next function returns
  log "building Asterisk $VERSION in $work (about 2-3 minutes)"
  tar -xzf "$TARBALL" -C "$work"
  (
    cd "$work/asterisk-$VERSION"
    ./configure --prefix="$PREFIX" --without-pjproject-bundled --without-jansson-bundled \
      --with-jansson --without-pjproject >configure.log 2>&1 || { tail -30 configure.log; exit 1; }
    make menuselect.makeopts >/dev/null 2>&1
    local enable=()
    for module in "${MODULES[@]}"; do enable+=(--enable "$module"); done
    menuselect/menuselect --disable-all "${enable[@]}" menuselect.makeopts >/dev/null
    make -j"$(nproc)" >make.log 2>&1 || { tail -40 make.log; exit 1; }
    make install >install.log 2>&1 || { tail -30 install.log; exit 1; }
  )
  log "installed in $PREFIX"
}

start() {
  local dir=${1:?usage: start DIR}
  "$PREFIX/sbin/asterisk" -C "$dir/etc/asterisk.conf" -F
  for _ in $(seq 1 50); do
    [ -S "$dir/run/asterisk.ctl" ] && "$PREFIX/sbin/asterisk" -C "$dir/etc/asterisk.conf" \
      -rx "core waitfullybooted" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "Asterisk did not start; see $dir/log/messages"
  exit 1
}

stop() {
  local dir=${1:?usage: stop DIR}
  [ -S "$dir/run/asterisk.ctl" ] || return 0
  "$PREFIX/sbin/asterisk" -C "$dir/etc/asterisk.conf" -rx "core stop now" >/dev/null 2>&1 || true
  for _ in $(seq 1 50); do
    [ -e "$dir/run/asterisk.pid" ] && kill -0 "$(cat "$dir/run/asterisk.pid")" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$(cat "$dir/run/asterisk.pid")" 2>/dev/null || true
}

case "${1:-}" in
  build) build ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  prefix) echo "$PREFIX" ;;
  *) echo "usage: $0 build|start DIR|stop DIR|prefix" >&2; exit 2 ;;
esac
