#!/usr/bin/env bash
# Builds the two local images the integration tests run containers from. No registry is needed:
# each image is a small root filesystem assembled from this host's files and loaded with
# `docker import`.
#
#   dstack-test/busybox:1  busybox-static and a symlink per applet in /bin (sh, echo, cat, sleep,
#                          true, env, ls, id, nc, wget, tar, ...). No /etc/passwd on purpose: the
#                          runner has to cope with images that have no user database.
#   dstack-test/glibc:1    a glibc userland: bash, dash (/bin/sh), coreutils, grep, sed, tar,
#                          gzip, findutils and exactly the shared libraries `ldd` lists for them,
#                          plus /etc/passwd and /etc/group with root. No Node, no git, no sshd.
#
# An image is built only when it is absent, when its label dstack-test.script-sha256 differs from
# this script's hash (the script changed), or with --force.
#
# Usage: bash scripts/make-test-images.sh [--force]
# Needs: docker (engine answering), busybox-static, bash, coreutils (scripts/setup.sh installs them).
set -euo pipefail

BUSYBOX_IMAGE="dstack-test/busybox:1"
GLIBC_IMAGE="dstack-test/glibc:1"
HASH_LABEL="dstack-test.script-sha256"
DEFAULT_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "make-test-images: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

say() { echo "make-test-images: $*"; }
die() { echo "make-test-images: error: $*" >&2; exit 1; }

script_hash="$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"

docker info >/dev/null 2>&1 || die "the Docker engine does not answer; run 'bash scripts/setup.sh' first"

# needs_build IMAGE: true when IMAGE must be (re)built.
needs_build() {
  local image="$1" label
  [ "$force" = 1 ] && return 0
  label="$(docker image inspect -f "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$image" 2>/dev/null)" || return 0
  [ "$label" != "$script_hash" ]
}

workdir="$(mktemp -d /tmp/dstack-test-images.XXXXXX)"
trap 'rm -rf "$workdir"' EXIT

# import ROOTFS IMAGE CMD_JSON: load a directory as a single-layer image.
import_rootfs() {
  local root="$1" image="$2" cmd="$3"
  tar --numeric-owner --owner=0 --group=0 -C "$root" -cf - . |
    docker import \
      --change "ENV PATH=$DEFAULT_PATH" \
      --change "CMD $cmd" \
      --change "WORKDIR /" \
      --change "LABEL $HASH_LABEL=$script_hash" \
      --change "LABEL org.opencontainers.image.description=\"dstack-ts test image, built by scripts/make-test-images.sh\"" \
      - "$image" >/dev/null
  say "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1/1e6}'))"
}

# Directories every Linux image is expected to have; docker mounts /proc, /sys, /dev and writes
# /etc/hosts, /etc/hostname and /etc/resolv.conf itself.
make_skeleton() {
  local root="$1"
  mkdir -p "$root"/{dev,proc,sys,etc,root,tmp,var/tmp,home,run,mnt,opt}
  chmod 1777 "$root/tmp" "$root/var/tmp"
  chmod 700 "$root/root"
}

build_busybox() {
  local root="$workdir/busybox" bb applet
  bb="$(command -v busybox || true)"
  [ -n "$bb" ] || die "busybox not found; install busybox-static (bash scripts/setup.sh does)"
  # A dynamically linked busybox would need libc inside the image.
  if ldd "$bb" >/dev/null 2>&1; then
    die "$bb is dynamically linked; install the busybox-static package"
  fi
  make_skeleton "$root"
  mkdir -p "$root/bin" "$root/usr/bin" "$root/sbin" "$root/usr/sbin"
  cp "$bb" "$root/bin/busybox"
  chmod 755 "$root/bin/busybox"
  for applet in $("$bb" --list); do
    [ "$applet" = busybox ] && continue
    ln -sf busybox "$root/bin/$applet"
  done
  # Shebangs such as #!/usr/bin/env sh must resolve.
  ln -sf ../../bin/busybox "$root/usr/bin/env"
  for applet in true sleep echo cat sh env ls id nc wget tar; do
    [ -L "$root/bin/$applet" ] || die "busybox on this host lacks the '$applet' applet"
  done
  import_rootfs "$root" "$BUSYBOX_IMAGE" '["/bin/sh"]'
}

# copy_with_libs ROOT BINARY...: copies each binary to the same path under ROOT (following
# symlinks, so the file lands where the usrmerged layout puts it) and every library ldd lists.
copy_with_libs() {
  local root="$1"; shift
  local bin lib
  for bin in "$@"; do
    cp -L --preserve=mode "$bin" "$root$bin"
    # ldd lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    while read -r lib; do
      [ -e "$root$lib" ] && continue
      mkdir -p "$root$(dirname "$lib")"
      cp -L --preserve=mode "$lib" "$root$lib"
    done < <(ldd "$bin" 2>/dev/null | awk '/=> \//{print $3} /^\t\//{print $1}')
  done
}

build_glibc() {
  local root="$workdir/glibc" pkg f
  make_skeleton "$root"
  # Debian 12 layout: /bin, /sbin and /lib are symlinks into /usr.
  mkdir -p "$root"/usr/{bin,sbin,lib/x86_64-linux-gnu,local/bin} "$root/lib64"
  ln -s usr/bin "$root/bin"
  ln -s usr/sbin "$root/sbin"
  ln -s usr/lib "$root/lib"

  local -a bins=()
  for pkg in bash dash coreutils grep sed tar gzip findutils; do
    while read -r f; do
      # Only regular executables under a bin directory; dpkg lists /bin/x and /usr/bin/x alike.
      case "$f" in */bin/*|*/sbin/*) ;; *) continue ;; esac
      [ -f "$f" ] && [ -x "$f" ] || continue
      # Resolve symlinks (/bin -> usr/bin, rbash -> bash) to the file itself.
      bins+=("$(realpath "$f")")
    done < <(dpkg -L "$pkg")
  done
  mapfile -t bins < <(printf '%s\n' "${bins[@]}" | sort -u)
  [ "${#bins[@]}" -gt 50 ] || die "found only ${#bins[@]} binaries from bash/coreutils; is this Debian?"
  copy_with_libs "$root" "${bins[@]}"
  ln -sf dash "$root/usr/bin/sh"
  # The dynamic loader at the path the ELF interpreter field names.
  [ -e "$root/lib64/ld-linux-x86-64.so.2" ] || die "ldd did not list the dynamic loader"

  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
  cat >"$root/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF
  printf 'include /etc/ld.so.conf.d/*.conf\n' >"$root/etc/ld.so.conf"
  mkdir -p "$root/etc/ld.so.conf.d"
  printf '/usr/local/lib\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n' >"$root/etc/ld.so.conf.d/x86_64-linux-gnu.conf"
  ldconfig -r "$root"
  chmod 644 "$root"/etc/{passwd,group,nsswitch.conf}

  [ -x "$root/usr/bin/bash" ] && [ -x "$root/usr/bin/ls" ] && [ -x "$root/usr/bin/env" ] ||
    die "bash or coreutils did not land in the glibc root filesystem"
  if [ -e "$root/usr/bin/node" ] || [ -e "$root/usr/bin/git" ] || [ -e "$root/usr/sbin/sshd" ]; then
    die "node, git or sshd leaked into the glibc image"
  fi
  import_rootfs "$root" "$GLIBC_IMAGE" '["/bin/bash"]'
}

if needs_build "$BUSYBOX_IMAGE"; then build_busybox; else say "$BUSYBOX_IMAGE is up to date"; fi
if needs_build "$GLIBC_IMAGE"; then build_glibc; else say "$GLIBC_IMAGE is up to date"; fi
