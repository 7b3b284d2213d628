#!/usr/bin/env bash
# Debian/Ubuntu: the real programs the test suite drives (Ardour headless, liblo's
# oscsend/oscdump, Lua 5.4, sox). Installs only what is missing; elsewhere it says what to get.
set -euo pipefail
needed=()
command -v ardour7-lua >/dev/null 2>&1 || needed+=(ardour)
command -v oscsend >/dev/null 2>&1 || needed+=(liblo-tools)
command -v lua5.4 >/dev/null 2>&1 || needed+=(lua5.4)
command -v sox >/dev/null 2>&1 || needed+=(sox)
[ ${#needed[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
else
  echo "install-system-deps: please install ${needed[*]} (e.g. with Homebrew); tests that need them are skipped" >&2
fi
