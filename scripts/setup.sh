#!/usr/bin/env bash
# make setup: Debian packages (installed only when missing) and the .venv.
#   scripts/setup.sh packages   check/install the Debian packages
#   scripts/setup.sh venv       (re)create .venv and install the package with its test extras
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# redis-server, postgresql: the stack's own instances (redis-sentinel: the
# DIALGUARD_REDIS_HA=1 stack's Sentinels); sip-tester: SIPp;
# debootstrap: the cached Asterisk root; python3-venv: .venv on Debian's python;
# systemd: systemd-analyze, which the tests use to verify the units in deploy/;
# faketime: libfaketime, the shifted clock of make test-dates; gcc, libc6-dev: its
# fixes (scripts/faketime-fixes.c); chromium, chromium-driver: the console's
# real-browser test (Selenium, headless); fonts-wqy-microhei: a CJK font, so its
# screenshots of the Chinese console show the characters and the console's PDF
# reports embed it (dialguard/audit/report_pdf.py).
PACKAGES=(redis-server redis-sentinel postgresql sip-tester debootstrap python3-venv systemd faketime gcc libc6-dev
          chromium chromium-driver fonts-wqy-microhei)
[[ $ASTERISK_MODE == system ]] && PACKAGES=("${PACKAGES[@]/debootstrap}")

packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    [[ -n $p ]] || continue
    dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing missing Debian packages: ${missing[*]}"
  local sudo=()
  if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || die "missing packages ${missing[*]} and not root (no sudo)"
    sudo=(sudo)
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# A Python >= 3.11 (pyproject requires-python): $PYTHON, python3 on PATH, or Debian's.
pick_python() {
  local c
  for c in ${PYTHON:-} python3 /usr/bin/python3; do
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  die "no Python >= 3.11 with the venv module found (set PYTHON=...)"
}

venv() {
  if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    local py; py=$(pick_python)
    log "creating .venv with $py"
    rm -rf "$VENV"
    "$py" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
  fi
  log "installing dialguard into .venv (pip install -e '.[test]')"
  "$VENV/bin/python" -m pip install -e "$REPO_ROOT[test]" >"$VENV/pip-install.log" 2>&1 || {
    tail -n 30 "$VENV/pip-install.log" >&2
    die "pip install failed (log: $VENV/pip-install.log)"
  }
  [[ -x $VENV/bin/dialguard ]] || die ".venv/bin/dialguard was not installed"
}

case ${1:-all} in
  packages) packages ;;
  venv) venv ;;
  all) packages; venv ;;
  *) die "usage: $0 [packages|venv|all]" ;;
esac
