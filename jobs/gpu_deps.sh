#!/usr/bin/env bash
# gpu_deps.sh — carry engram's Debian libraries to a machine that lacks them: the GPU machine has
# CUDA, cuBLAS, NCCL, CMake and PyTorch but no Open MPI, HDF5, OpenBLAS, utf8proc, libyaml, PCRE2,
# cJSON or cmocka, and no network (docs/gpu.md; ENVIRONMENT.md "The GPU machine").
#   bash jobs/gpu_deps.sh pack              here (Debian 12, bash jobs/setup.sh done): the .debs into
#                                           .debs/ (git-ignored; bring it along with the checkout)
#   bash jobs/gpu_deps.sh unpack [PREFIX]   there: dpkg -x each into PREFIX (default /opt/deps, never
#                                           /), recreate the alternatives links dpkg -x does not make,
#                                           and write PREFIX/env.sh; then `source PREFIX/env.sh`
# pack takes the -dev packages the build uses plus every package holding a shared library that they,
# Open MPI's programs or its plugins load, less Debian's required/important base (libc6, zlib1g, ...)
# and the C/C++ runtime: 75 packages, 37 MB (the tree that travels to the GPU machine may be 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=(libopenmpi-dev openmpi-bin openmpi-common libpmix-dev libhwloc-dev libevent-dev
     libhdf5-openmpi-dev libaec-dev libopenblas-dev libopenblas-pthread-dev
     libutf8proc-dev libpcre2-dev libyaml-dev libcjson-dev libcmocka-dev
     libssl-dev libcurl4-openssl-dev zlib1g-dev)   # h5pcc names -lcrypto -lcurl -lz
KEEP=(zlib1g)   # base packages packed all the same: zlib1g-dev's libz.so points into zlib1g
ML=/usr/lib/x86_64-linux-gnu

owners_() { xargs -r readlink -f | xargs -r dpkg -S 2>/dev/null | cut -d: -f1 | tr ', ' '\n\n' || true; }

pack() {
  local files pkgs
  # the shared objects and programs of those packages (the installed ones), and Open MPI's / PMIx's
  # plugins: the packages owning them and the libraries they load
  files=$(dpkg -L "${DEV[@]}" 2>/dev/null | grep -E '\.so(\.[0-9.]+)?$|^/usr/bin/' || true)
  files+=$'\n'$(ls $ML/openmpi/lib/openmpi3/*.so $ML/pmix2/lib/pmix/*.so 2>/dev/null || true)
  pkgs=$( { printf '%s\n' "${DEV[@]}"
            printf '%s\n' $files | owners_
            printf '%s\n' $files | { xargs -r ldd 2>/dev/null || true; } | awk '/=> \//{print $3}' | sort -u | owners_
          } | grep . | sort -u)
  # leave out Debian's base and the C/C++ runtime: every system has its own (an older libstdc++ first
  # on LD_LIBRARY_PATH would break the machine's newer programs)
  pkgs=$(apt-cache show --no-all-versions $pkgs 2>/dev/null \
         | awk '/^Package:/{p=$2} /^Priority:/{if ($2 != "required" && $2 != "important") print p}' \
         | grep -vxE 'libstdc\+\+6|libgcc-s1|libatomic1|libuuid1|libudev1' | sort -u)
  pkgs+=" ${KEEP[*]}"
  rm -rf .debs && mkdir -p .debs
  (cd .debs && apt-get download $pkgs 2>&1 >/dev/null | grep -v "unsandboxed as root" || true)
  echo "gpu_deps: $(ls .debs | wc -l) packages, $(du -sh .debs | cut -f1) in .debs/"
}

unpack() {
  local P=${1:-/opt/deps}
  [[ $P != / ]] || { echo "gpu_deps: unpack into a prefix such as /opt/deps, not /"; exit 2; }
  ls .debs/*.deb >/dev/null 2>&1 || { echo "gpu_deps: no .debs/ here: run 'bash jobs/gpu_deps.sh pack' on the Debian machine and bring .debs/ along"; exit 2; }
  mkdir -p "$P"
  for d in .debs/*.deb; do dpkg -x "$d" "$P"; done
  # links Debian's alternatives system would have made (dpkg -x runs no maintainer scripts)
  local U=$P/usr
  for t in mpicc mpicxx mpirun mpiexec; do [[ -e $U/bin/$t.openmpi ]] && ln -sf "$t.openmpi" "$U/bin/$t"; done
  ln -sf h5pcc.openmpi "$U/bin/h5pcc" 2>/dev/null || true
  sed -i "s|^prefix=\"/usr\"|prefix=\"$U\"|" "$U/bin/h5pcc.openmpi"   # CMake's FindHDF5 asks it for paths
  ln -sf openblas-pthread/libopenblas.so "$U/lib/x86_64-linux-gnu/libopenblas.so"
  ln -sf openblas-pthread/cblas.h "$U/include/x86_64-linux-gnu/cblas.h"
  cat > "$P/env.sh" <<ENV
# source this before configuring or running engram against the libraries unpacked in $P
export PATH=$U/bin:\$PATH
export LD_LIBRARY_PATH=$U/lib/x86_64-linux-gnu:$U/lib/x86_64-linux-gnu/openblas-pthread:$U/lib/x86_64-linux-gnu/hdf5/openmpi:$U/lib/x86_64-linux-gnu/openmpi/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export OPAL_PREFIX=$U            # relocates Open MPI: its wrappers, mpirun and plugins
export PMIX_INSTALL_PREFIX=$U    # the same for PMIx
export PKG_CONFIG_PATH=$U/lib/x86_64-linux-gnu/pkgconfig:$U/share/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=$P   # .pc files say /usr: prefix their -I and -L with $P
export CMAKE_PREFIX_PATH=$U
export CPATH=$U/include/x86_64-linux-gnu:$U/include\${CPATH:+:\$CPATH}
ENV
  echo "gpu_deps: unpacked $(ls .debs/*.deb | wc -l) packages into $P; now: source $P/env.sh"
}

case ${1:-} in
  pack) pack ;;
  unpack) unpack "${2:-}" ;;
  *) echo "usage: bash jobs/gpu_deps.sh pack | unpack [PREFIX]"; exit 2 ;;
esac
