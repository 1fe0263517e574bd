#!/usr/bin/env bash
# Makes Debian/Ubuntu packages available for a part of the test suite, once: installs those of PACKAGE...
# that are not installed yet, with apt-get, when it can (root or passwordless sudo).
#
#   scripts/ensure_system_packages.sh --for "what needs them" PACKAGE...
#
# The Makefile's `test` target runs it for headless camera rendering (MuJoCo through EGL or OSMesa:
# libegl1 libegl-mesa0 libgl1 libosmesa6; see include/lerobot_kfold/rendering.py) and for the
# CeleryExecutor topology of docker-compose.yaml run natively (postgresql redis-server; see
# scripts/native_services.py). Why the system packages: MuJoCo's wheel brings no OpenGL, and PyPI has
# no PostgreSQL or Redis server; the distribution's package registry has them. Without apt-get, root or sudo it only says what to install and exits 0; the tests
# that need the packages then fail with the same advice.
set -euo pipefail
PURPOSE="the tests"
if [ "${1:-}" = "--for" ]; then
  PURPOSE="$2"
  shift 2
fi
if [ "$#" -eq 0 ]; then
  echo "usage: $0 [--for PURPOSE] PACKAGE..." >&2
  exit 2
fi
if [ "$(uname -s)" != Linux ]; then
  exit 0 # macOS renders through CGL and needs none of these
fi
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "not a Debian-based system: install the equivalents of '$*' for $PURPOSE." >&2
  exit 0
fi
MISSING=()
for pkg in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    MISSING+=("$pkg")
  fi
done
if [ "${#MISSING[@]}" -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "missing for $PURPOSE: run 'sudo apt-get install -y --no-install-recommends ${MISSING[*]}'." >&2
    exit 0
  fi
fi
echo "installing Debian packages for $PURPOSE: ${MISSING[*]} ..."
# Another apt run on a shared machine holds the lock for a while: wait for it rather than fail.
APT=(apt-get -q -o DPkg::Lock::Timeout=300)
# A failed install (no registry, a held lock) is reported but does not stop `make test`: the tests that
# need the packages fail with the install advice, the others still run.
if ! { $SUDO "${APT[@]}" update >/dev/null &&
  $SUDO env DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y --no-install-recommends "${MISSING[@]}" \
    >/dev/null 2>&1; }; then
  echo "could not install ${MISSING[*]} for $PURPOSE; install them by hand (apt-get install -y ${MISSING[*]})." >&2
fi
