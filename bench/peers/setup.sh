#!/bin/sh
# Installs the Debian packages the peer drivers need (issue #4).
# Only runs apt-get when something is missing, so a second call is cheap
# and a machine without network but with the packages still passes.
set -eu
PKGS="libglib2.0-dev libuv1-dev libapr1-dev libaprutil1-dev golang-go pkg-config"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && { echo "peers: all packages present"; exit 0; }
cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" != 0 ]; then
    echo "peers: missing:$missing; as root run: apt-get update && $cmd" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
$cmd
