#!/usr/bin/env bash
# Makes sure the commands the cluster, the tests, the benchmark and the image
# build (hack/image.sh) use are here. Go and Rust are expected on the machine;
# the rest are Debian packages, installed with apt-get when this runs as root,
# and otherwise named so that you can install them.
#
#   hack/prerequisites.sh     (hack/run.sh, hack/test.sh and .ci/run call it)
set -euo pipefail

log() { printf '[prerequisites] %s\n' "$*" >&2; }

# command -> Debian package that provides it
declare -A pkg_of=(
  [curl]=curl [openssl]=openssl [flock]=util-linux [setsid]=util-linux
  [base64]=coreutils [sha256sum]=coreutils [readlink]=coreutils
  [awk]=mawk [sed]=sed [grep]=grep [git]=git
  # hack/image.sh: the container image without a container engine
  [buildah]=buildah [skopeo]=skopeo [umoci]=umoci [jq]=jq [musl-gcc]=musl-tools
  [readelf]=binutils [chroot]=coreutils [numfmt]=coreutils
)

command -v go >/dev/null 2>&1 || { log "go is missing: install Go (https://go.dev/dl/)"; exit 1; }
command -v cargo >/dev/null 2>&1 || { log "cargo is missing: install Rust (https://rustup.rs)"; exit 1; }

missing=()
for cmd in "${!pkg_of[@]}"; do
  command -v "${cmd}" >/dev/null 2>&1 || missing+=("${pkg_of[${cmd}]}")
done
((${#missing[@]})) || exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  log "missing: ${missing[*]} (Debian/Ubuntu: sudo apt-get install ${missing[*]})"
  exit 1
fi
log "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
