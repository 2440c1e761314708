#!/usr/bin/env bash
# scripts/install-deps.sh — install the Debian 12 packages explora builds on.
#
# As root it runs apt-get; otherwise it prints the exact command to run and
# exits 1. Packages already present are not touched. Idempotent.
set -euo pipefail

packages=(
  build-essential cmake pkg-config      # compiler and build
  libiniparser-dev                      # INI parsing (core/src/config.c)
  libcjson-dev                          # JSON (safetensors headers)
  libopenblas-openmp-dev                # BLAS for the CPU backend, OpenMP build (one thread pool with our loops)
  zlib1g-dev                            # gzipped IDX files (datasets/idx)
  libturbojpeg0-dev                     # JPEG decoding, TurboJPEG 2.x API (core/src/image.c)
  libspng-dev                           # PNG decoding (core/src/image.c) and writing (explora analyze)
  libtiff-dev                           # TIFF/GeoTIFF decoding, many bands (core/src/image_tiff.c)
  liblapacke-dev                        # LAPACKE symmetric eigensolver (explora analyze, core/cli/analyze_stats.c)
  libjpeg-turbo-progs                   # cjpeg/djpeg: JPEG test fixtures and reference decodes (tests/test_image.c)
  libcmocka-dev                         # unit tests
  dataset-fashion-mnist                 # real images for the demo and tests (/usr/share/datasets/fashion-mnist)
  binutils                              # nm, used by the out-of-tree plugin test
  libopenmpi-dev openmpi-bin            # MPI: multi-process data-parallel training (core/src/comm_mpi.c); optional
  hipcc libamdhip64-dev                 # HIP backend for AMD GPUs (backends/hip): built, and so compile-checked, everywhere
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}"
  echo "install-deps: run as root:  apt-get update && $cmd"
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
$cmd
