#!/bin/sh
# Unpacks kubectl from Debian 12's kubernetes-client package (1.20, kustomize v2.0.3 built in)
# into DIR, without installing it: on machines whose /usr/bin/kubectl comes from another
# package, installing would clash on that path. Idempotent; needs apt's package lists.
#   get_debian_kubectl.sh DIR   ->   DIR/usr/bin/kubectl
set -eu
dir=$1
if [ -x "$dir/usr/bin/kubectl" ]; then
  echo "have $dir/usr/bin/kubectl"
  exit 0
fi
mkdir -p "$dir/deb"
cd "$dir/deb"
# apt-get download writes to the current directory; as root it warns that _apt cannot
# write here, which is harmless. A machine whose packages all came preinstalled may have no
# package lists yet: update them once and retry.
if ! apt-get download kubernetes-client >download.log 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq >>download.log 2>&1 || true; fi
  if ! apt-get download kubernetes-client >>download.log 2>&1; then
    echo "apt-get download kubernetes-client failed:" >&2
    cat download.log >&2
    exit 1
  fi
fi
dpkg-deb -x kubernetes-client_*.deb "$dir"
"$dir/usr/bin/kubectl" version --client
