#!/usr/bin/env bash
# Builds the container images of the controller, ztunnel (proxy and node agent) and the
# waypoint from the binaries cargo built, then runs each in a container and prints its size.
#
#   scripts/build-images.sh [--profile debug|release] [--registry R] [--tag T]
#                           [--tool docker|podman|buildah]
#
# Each image is `FROM scratch` plus a root file system assembled here: the stripped binary,
# the shared libraries `ldd` lists (and the dynamic loader), /etc/passwd and /etc/group, and
# for ztunnel the programs the node agent runs (ip, iptables-save/-restore for both families)
# with their libraries and iptables extensions. No base image is pulled. The Containerfiles
# are images/<component>.Containerfile. Build first: `cargo build [--release] -p controller
# -p ztunnel -p waypoint`.
#
# Images are named <registry>/<component>:<tag>, by default as the manifests name them
# (ghcr.io/ambient-mesh/<component>:0.1.0). The tool is the first of docker, podman and
# buildah that can actually build (a docker client without a reachable engine is skipped).
# Exits non-zero, naming what failed, if an image does not build or does not run.
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY=ghcr.io/ambient-mesh
COMPONENTS=(controller ztunnel waypoint)
profile=debug
tag=0.1.0
tool=

usage() {
  echo "usage: scripts/build-images.sh [--profile debug|release] [--registry R] [--tag T]" \
    "[--tool docker|podman|buildah]" >&2
  exit "${1:-2}"
}

fail() {
  echo "build-images: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:?--profile needs debug or release}; shift 2 ;;
    --registry) REGISTRY=${2:?--registry needs a value}; shift 2 ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --tool) tool=${2:?--tool needs docker, podman or buildah}; shift 2 ;;
    -h | --help) usage 0 ;;
    *) echo "build-images: unknown argument $1" >&2; usage ;;
  esac
done
case "$profile" in
  debug | release) ;;
  *) fail "--profile must be debug or release, not $profile" ;;
esac

# Global flags for podman: cgroupfs and file events work without systemd (containers, CI
# runners) and are harmless where systemd runs. runc, when installed, runs the containers:
# crun refuses hosts whose cgroups are in hybrid mode (v1 controllers and a v2 tree).
PODMAN=(podman --cgroup-manager=cgroupfs --events-backend=file)
BUILDAH_RUN=(buildah run)
if command -v runc >/dev/null 2>&1; then
  PODMAN+=(--runtime=runc)
  BUILDAH_RUN+=(--runtime=runc)
fi
# Limits set explicitly, and low: the runtimes' defaults are more than a host without
# CAP_SYS_RESOURCE (itself a container, a CI runner) may grant, and the checks need few.
LIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

tool_works() {
  case "$1" in
    docker) command -v docker >/dev/null && docker info >/dev/null 2>&1 ;;
    podman) command -v podman >/dev/null && "${PODMAN[@]}" info >/dev/null 2>&1 ;;
    buildah) command -v buildah >/dev/null && buildah info >/dev/null 2>&1 ;;
    *) return 1 ;;
  esac
}

if [ -z "$tool" ]; then
  for candidate in docker podman buildah; do
    if tool_works "$candidate"; then
      tool=$candidate
      break
    fi
  done
  [ -n "$tool" ] || fail "no container tool works: install podman or buildah (or start docker's engine)"
elif ! tool_works "$tool"; then
  fail "$tool is not installed or cannot reach its engine (\`$tool info\` fails)"
fi

for c in "${COMPONENTS[@]}"; do
  [ -x "target/$profile/$c" ] ||
    fail "target/$profile/$c is missing: run cargo build$([ "$profile" = release ] && echo ' --release') -p controller -p ztunnel -p waypoint"
done

# The chained CNI plugin runs on the node, from the host's CNI bin folder, with whatever C
# library the host has (often older than the one it is built against): it is built as a
# static executable. Its crate is std and serde only, so this build is quick; it has a target
# folder of its own, as its compiler flags differ.
build_static_plugin() {
  local triple release=()
  triple=$(rustc -vV | awk '$1 == "host:" { print $2 }')
  case "$triple" in
    *-linux-gnu) ;;
    *) fail "a static ztunnel-cni is built for *-linux-gnu hosts only, not $triple" ;;
  esac
  [ "$profile" = release ] && release=(--release)
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet "${release[@]}" \
    -p ztunnel-cni --target "$triple" --target-dir target/static >&2 ||
    fail "building the static ztunnel-cni failed"
  plugin="target/static/$triple/$profile/ztunnel-cni"
  if readelf -d "$plugin" | grep -q NEEDED; then
    fail "$plugin needs shared libraries: the node's may not match"
  fi
}
build_static_plugin

work=$(mktemp -d /tmp/build-images.XXXXXX)
# buildah's working container for `component`'s check (podman and docker remove theirs).
buildah_container() {
  echo "build-images-$$-$1"
}
cleanup() {
  local c
  if [ "$tool" = buildah ]; then
    for c in "${COMPONENTS[@]}"; do
      buildah rm "$(buildah_container "$c")" >/dev/null 2>&1 || true
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
# Interrupted: exit, so that the cleanup runs.
trap 'exit 130' INT TERM

# Copies `file` into `root` at the same path, symlinks resolved.
copy_file() {
  local file=$1 root=$2
  mkdir -p "$root$(dirname "$file")"
  cp -L "$file" "$root$file"
}

# Copies the shared libraries and the loader `elf` needs (as `ldd` resolves them here).
copy_libraries() {
  local elf=$1 root=$2 lib
  for lib in $(ldd "$elf" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    [ -e "$root$lib" ] || copy_file "$lib" "$root"
  done
}

# The node agent runs `ip` and `ip[6]tables-save`/`-restore` inside pod namespaces. The
# iptables programs are the nf_tables variant (Debian's default; it talks netlink, so it
# needs NET_ADMIN but no NET_RAW and no lock file), one multi-call binary under the names
# the agent runs. In the node's own namespace the agent writes its probe rule in the variant
# the node's rules use (`-nft-` or `-legacy-` names), so the legacy multi-call binary goes in
# too. All extensions go in: `iptables-save` must be able to print whatever rules other
# components (CNI plugins) left in a pod's namespace.
add_node_agent_tools() {
  local root=$1 ip multi legacy xtables name family ext
  ip=$(command -v ip) || fail "ip (iproute2) is not installed: the ztunnel image carries it"
  multi=$(command -v xtables-nft-multi) ||
    fail "xtables-nft-multi (iptables) is not installed: the ztunnel image carries it"
  legacy=$(command -v xtables-legacy-multi) ||
    fail "xtables-legacy-multi (iptables) is not installed: the ztunnel image carries it"
  xtables=$(find /usr/lib /usr/lib64 -maxdepth 2 -type d -name xtables -print -quit 2>/dev/null)
  [ -n "$xtables" ] || fail "the iptables extensions folder (…/xtables) was not found"
  cp -L "$ip" "$root/usr/sbin/ip"
  copy_libraries "$ip" "$root"
  cp -L "$multi" "$root/usr/sbin/xtables-nft-multi"
  copy_libraries "$multi" "$root"
  cp -L "$legacy" "$root/usr/sbin/xtables-legacy-multi"
  copy_libraries "$legacy" "$root"
  for family in iptables ip6tables; do
    for name in "$family" "$family-save" "$family-restore"; do
      ln -s xtables-nft-multi "$root/usr/sbin/$name"
    done
    for name in "$family-nft-save" "$family-nft-restore"; do
      ln -s xtables-nft-multi "$root/usr/sbin/$name"
    done
    for name in "$family-legacy-save" "$family-legacy-restore"; do
      ln -s xtables-legacy-multi "$root/usr/sbin/$name"
    done
  done
  for ext in "$xtables"/*.so; do
    copy_file "$ext" "$root"
    copy_libraries "$ext" "$root"
  done
}

# The build context of one component: its Containerfile and rootfs/.
assemble() {
  local component=$1 context=$2
  local root=$context/rootfs
  mkdir -p "$root/usr/local/bin" "$root/usr/sbin" "$root/etc" "$root/tmp"
  chmod 1777 "$root/tmp"
  cp "target/$profile/$component" "$root/usr/local/bin/$component"
  strip --strip-all "$root/usr/local/bin/$component"
  copy_libraries "$root/usr/local/bin/$component" "$root"
  # uid 1337 is the user the manifests run the controller and waypoint as.
  printf 'root:x:0:0:root:/root:/sbin/nologin\nmesh:x:1337:1337:mesh:/nonexistent:/sbin/nologin\n' \
    >"$root/etc/passwd"
  printf 'root:x:0:\nmesh:x:1337:\n' >"$root/etc/group"
  if [ "$component" = ztunnel ]; then
    add_node_agent_tools "$root"
    # The chained CNI plugin the node agent copies into the host's CNI bin folder: static
    # (build_static_plugin), as it runs on the host.
    cp "$plugin" "$root/usr/local/bin/ztunnel-cni"
    strip --strip-all "$root/usr/local/bin/ztunnel-cni"
  fi
  cp "images/$component.Containerfile" "$context/Containerfile"
}

image_name() {
  echo "$REGISTRY/$1:$tag"
}

# The image id `name` points at now, or nothing.
image_id() {
  case "$tool" in
    docker) docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true ;;
    podman) "${PODMAN[@]}" image inspect --format '{{.Id}}' "$1" 2>/dev/null || true ;;
    buildah) buildah inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null || true ;;
  esac
}

build() {
  local context=$1 name=$2
  case "$tool" in
    docker) docker build --quiet -t "$name" "$context" >/dev/null ;;
    podman) "${PODMAN[@]}" build --quiet --network=none -t "$name" "$context" >/dev/null ;;
    buildah) buildah build --quiet --network=none -t "$name" "$context" >/dev/null ;;
  esac
}

# Runs the image's entrypoint with `args`, in a container without network.
run_image() {
  local name=$1 component=$2
  shift 2
  case "$tool" in
    docker) docker run --rm --network=none "${LIMITS[@]}" "$name" "$@" ;;
    podman) "${PODMAN[@]}" run --rm --network=none "${LIMITS[@]}" "$name" "$@" ;;
    buildah)
      local ctr status=0
      ctr=$(buildah_container "$component")
      buildah from --name "$ctr" "${LIMITS[@]}" "$name" >/dev/null
      "${BUILDAH_RUN[@]}" --network=none "$ctr" -- "/usr/local/bin/$component" "$@" || status=$?
      buildah rm "$ctr" >/dev/null
      return "$status"
      ;;
  esac
}

image_size() {
  case "$tool" in
    docker) docker image inspect --format '{{.Size}}' "$1" | numfmt --to=si --suffix=B --format=%.1f ;;
    podman) "${PODMAN[@]}" image inspect --format '{{.Size}}' "$1" | numfmt --to=si --suffix=B --format=%.1f ;;
    buildah) buildah images --format '{{.Size}}' "$1" ;;
  esac
}

remove_image() {
  case "$tool" in
    docker) docker image rm "$1" ;;
    podman) "${PODMAN[@]}" image rm "$1" ;;
    buildah) buildah rmi "$1" ;;
  esac
}

echo "building images with $tool from target/$profile"
for component in "${COMPONENTS[@]}"; do
  name=$(image_name "$component")
  context=$work/$component
  assemble "$component" "$context"
  previous=$(image_id "$name")
  build "$context" "$name" || fail "$name: the $tool build failed"
  # The image this one replaces, now untagged: removed so that rebuilding does not pile up
  # layers (kept when a container still uses it).
  if [ -n "$previous" ] && [ "$previous" != "$(image_id "$name")" ]; then
    remove_image "$previous" >/dev/null 2>&1 || true
  fi
  help=$(run_image "$name" "$component" --help 2>&1) ||
    fail "$name: \`$component --help\` failed in a container: $help"
  case "$help" in
    *"Usage: $component"*) ;;
    *) fail "$name: \`--help\` does not print the usage of $component: $help" ;;
  esac
done

printf '%-45s %s\n' IMAGE SIZE
for component in "${COMPONENTS[@]}"; do
  name=$(image_name "$component")
  printf '%-45s %s\n' "$name" "$(image_size "$name")"
done
