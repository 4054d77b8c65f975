#!/bin/sh
# Installs the system programs the tests need (Debian packages), or fails at once with the command to run.
# Run first by `npm test`; `.ci/run` runs `npm test` too. Needed: bubblewrap (bash sandbox), slirp4netns (the
# sandbox's outbound network), prometheus + promtool (metrics tests), ripgrep and fd-find (pi's grep and find tools; pi would try to download them otherwise),
# systemd-analyze (checks deploy/pi-server.service), chromium (the client suite in a real browser, via playwright-core),
# redis-server (several nodes on Redis).
set -eu

missing=""
need() { command -v "$1" >/dev/null 2>&1 || missing="$missing $2"; }
need bwrap bubblewrap
need slirp4netns slirp4netns
need promtool prometheus
need prometheus prometheus
need rg ripgrep
need systemd-analyze systemd
need chromium chromium
need redis-server redis-server
if ! command -v fd >/dev/null 2>&1 && ! command -v fdfind >/dev/null 2>&1; then missing="$missing fd-find"; fi
missing=$(echo "$missing" | tr ' ' '\n' | sort -u | tr '\n' ' ' | sed 's/^ *//; s/ *$//')
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = "0" ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "provision: missing Debian packages: $missing" >&2
  echo "provision: run: sudo apt-get install -y --no-install-recommends $missing" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "provision: missing packages ($missing) and no apt-get here: install them with your package manager" >&2
  exit 1
fi
echo "provision: installing $missing" >&2
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 || {
  $SUDO apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
}
