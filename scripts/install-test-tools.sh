#!/usr/bin/env bash
# The programs the test suite drives besides Python packages: Debian's chromium (the browser tests, through
# playwright) and docker-compose (the compose file's check). `make test` runs this first. As root on
# Debian or Ubuntu it installs what is missing; anywhere else it says what to install and stops.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} (apt-get)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    exit 0
fi
echo "make test needs ${missing[*]}: install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}) and run make test again" >&2
exit 1
