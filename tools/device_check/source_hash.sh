#!/usr/bin/env bash
# A short hash of the sources the standalone CUDA build compiles (code and build files under
# services, bench and tests), so device_check.sh can tell whether the prebuilt binaries in
# .device/bin were built from the tree it runs in. Run from the repository root.
set -euo pipefail
find services bench tests -type f \( -name '*.cu' -o -name '*.cuh' -o -name '*.cc' -o -name '*.h' \
  -o -name 'CMakeLists.txt' -o -name '*.cmake' \) -print0 | LC_ALL=C sort -z |
  xargs -0 sha256sum | sha256sum | cut -c1-16
