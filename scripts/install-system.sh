#!/usr/bin/env bash
# Install the Debian packages the project needs, only those missing. Idempotent; needs root or sudo.
# Usage: scripts/install-system.sh PACKAGE...
set -euo pipefail

missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
# apt's output goes to a log (its tail is shown when a stage fails); one line per stage here.
log=${AR_SETUP_LOG:-/tmp/action-recognition-setup.log}
here=$(dirname "$0")
echo "installing Debian packages: ${missing[*]} (log: $log)" >&2
"$here/quietly.sh" "  apt-get update" "$log" "${as_root[@]}" apt-get update -q
"$here/quietly.sh" "  apt-get install" "$log" env DEBIAN_FRONTEND=noninteractive "${as_root[@]}" \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
