#!/bin/sh
# Works out what a runtime image needs for the given binaries, from their dynamic
# dependencies (ldd), so that no package list has to be kept in step with the code.
#
#   collect-runtime.sh packages BIN...      Debian packages that own the libraries (one a line)
#   collect-runtime.sh bundle DIR BIN...    copies the libraries into DIR, except those the
#                                           target base image provides: glibc, libstdc++/libgcc
#                                           (newer on the CUDA base, and backward compatible)
#                                           and the CUDA/NCCL libraries of the NVIDIA base.
set -eu
mode=$1; shift
libs() {
  for bin in "$@"; do
    # "libfoo.so.1 => /usr/lib/x86_64-linux-gnu/libfoo.so.1 (0x...)"
    ldd "$bin" | awk '/=> \// {print $3}'
    if ldd "$bin" | grep -q 'not found'; then
      echo "collect-runtime: $bin has unresolved libraries:" >&2
      ldd "$bin" | grep 'not found' >&2
      exit 1
    fi
  done | sort -u
}
case "$mode" in
  packages)
    libs "$@" | while read -r lib; do
      # dpkg knows the path it installed, which may sit behind the /lib -> /usr/lib symlink.
      dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null || \
        dpkg -S "${lib#/usr}" 2>/dev/null || { echo "collect-runtime: no package owns $lib" >&2; exit 1; }
    done | cut -d: -f1 | sort -u
    ;;
  bundle)
    dir=$1; shift
    mkdir -p "$dir"
    libs "$@" | grep -Ev '/(libc|libm|libdl|libpthread|librt|libresolv|ld-linux[^/]*|libstdc\+\+|libgcc_s)\.so' \
      | grep -Ev '/(libcuda|libcudart|libcublas|libcublasLt|libnccl|libnvrtc|libnvJitLink)\.so' \
      | while read -r lib; do cp -L "$lib" "$dir/"; done
    ls "$dir"
    ;;
  *) echo "usage: $0 packages BIN... | bundle DIR BIN..." >&2; exit 2 ;;
esac
