#!/usr/bin/env bash
# Unpacks the Debian packages the build needs into .deps/ (dpkg -x, never into /), for machines
# that have torch, CMake and ninja but no Debian packages and no network: the GPU device machine.
# Run it here, then carry .deps/ along (it is git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(libeigen3-dev libyaml-cpp-dev libyaml-cpp0.7 googletest libgtest-dev libbenchmark-dev libbenchmark1debian
      libcli11-dev nlohmann-json3-dev)
rm -rf .deps && mkdir -p .deps/debs
(cd .deps/debs && apt-get download "${PKGS[@]}" >/dev/null)
for d in .deps/debs/*.deb; do dpkg -x "$d" .deps/root; done
rm -rf .deps/debs
echo "fetch-deps: unpacked ${#PKGS[@]} packages into .deps/root ($(du -sh .deps | cut -f1))"
