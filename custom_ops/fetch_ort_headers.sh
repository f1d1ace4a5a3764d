#!/usr/bin/env bash
# Fetch the ONNX Runtime C/C++ API headers into a folder, without installing anything.
#
# No PyPI wheel ships these headers. On a Debian-family machine this downloads Debian trixie's
# libonnxruntime-dev (.deb) through a temporary apt sources list (the machine's own Debian
# mirror, suite "trixie"), unpacks it with `dpkg -x` and keeps only include/. Nothing is
# installed and the machine's apt configuration is not changed.
#
# Headers older than the runtime are fine (the C API is backward compatible: a library built
# against 1.21 headers runs in onnxruntime 1.31+); newer headers than the runtime are not.
#
# Alternative (any OS): download an official onnxruntime release archive
# (onnxruntime-<os>-<arch>-<version>.tgz from the project's GitHub releases), unpack it, and
# point the build at its include/:   cmake -DORT_INCLUDE_DIR=/path/onnxruntime-.../include
#
# usage: custom_ops/fetch_ort_headers.sh [DEST]      (default: custom_ops/build/ort-include)
# prints DEST (the folder that holds onnxruntime_c_api.h) on its last line.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-$here/build/ort-include}"
suite="${ORT_HEADERS_SUITE:-trixie}"

if [ -f "$dest/onnxruntime_c_api.h" ]; then
    echo "$dest"
    exit 0
fi
command -v apt-get >/dev/null && command -v dpkg >/dev/null || {
    echo "error: apt-get/dpkg not found; unpack an onnxruntime release archive and set ORT_INCLUDE_DIR to its include/" >&2
    exit 1
}

# the machine's Debian mirror (deb822 .sources or one-line sources.list), else the default
mirror="$(grep -hoE '^URIs:[[:space:]]*\S+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | awk '{print $2}' || true)"
if [ -z "$mirror" ]; then
    mirror="$(grep -hoE '^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?\S+/debian/?[[:space:]]' /etc/apt/sources.list 2>/dev/null | head -n1 | awk '{print $NF}' || true)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/etc/preferences.d"
signed=""
[ -f "$keyring" ] && signed="[signed-by=$keyring] "
echo "deb ${signed}${mirror} ${suite} main" >"$work/sources.list"
apt_opts=(
    -o "Dir::Etc::SourceList=$work/sources.list"
    -o "Dir::Etc::SourceParts=$work/none"
    -o "Dir::Etc::Preferences=$work/none"
    -o "Dir::Etc::PreferencesParts=$work/etc/preferences.d"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache"
    -o "APT::Get::List-Cleanup=0"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=root"
)
echo "fetching libonnxruntime-dev from ${mirror} (${suite}) ..." >&2
apt-get "${apt_opts[@]}" -qq update >&2
(cd "$work" && apt-get "${apt_opts[@]}" -qq download libonnxruntime-dev >&2)
deb="$(ls "$work"/libonnxruntime-dev_*.deb | head -n1)"
dpkg -x "$deb" "$work/root"
header="$(find "$work/root" -name onnxruntime_c_api.h | head -n1)"
[ -n "$header" ] || { echo "error: $deb holds no onnxruntime_c_api.h" >&2; exit 1; }
mkdir -p "$dest"
cp -r "$(dirname "$header")"/. "$dest"/
echo "headers from $(basename "$deb") in $dest" >&2
echo "$dest"
