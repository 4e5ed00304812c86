#!/usr/bin/env bash
# Make this host ready to isolate tasks: bubblewrap (bwrap) for tasks run on the host, podman
# with runc for tasks that name an image, socat for the bridges into a task's network namespace
# (a pool's egress allow-list, service replicas), and a small local image for tests and demos.
#
# Usage: scripts/isolation-up.sh
#
# Binaries come from the Debian packages bubblewrap, podman, runc, socat and busybox-static. When
# one is missing and COMPUTENET_INSTALL_ISOLATION=1, running as root with apt-get, they are
# installed; otherwise the script exits 3 with one line saying why. The image
# localhost/computenet-busybox:1 (BusyBox and links to its applets; no registry is needed) is
# imported into podman's store when missing. Its last line on stdout is the image's name.
#
# Exit status: 0 ok; 3 not available here (one line on stderr says why); 1 other failure.
set -euo pipefail

readonly PROG=isolation-up.sh
readonly PACKAGES=(bubblewrap podman runc socat busybox-static)
readonly IMAGE=localhost/computenet-busybox:1
readonly APPLETS=(sh ash echo cat ls id sleep ps mkdir rm ln mv touch true false wc nc env
    pwd kill head tail grep sed test expr seq nohup setsid)

die() {
    local code=$1
    shift
    echo "$PROG: $*" >&2
    exit "$code"
}

missing() {
    local out=()
    command -v bwrap >/dev/null 2>&1 || out+=(bwrap)
    command -v podman >/dev/null 2>&1 || out+=(podman)
    command -v socat >/dev/null 2>&1 || out+=(socat)
    command -v runc >/dev/null 2>&1 || [[ -x /usr/sbin/runc ]] || out+=(runc)
    [[ -x /bin/busybox || -x /usr/bin/busybox ]] || out+=(busybox)
    echo "${out[*]:-}"
}

need=$(missing)
if [[ -n $need ]]; then
    if [[ ${COMPUTENET_INSTALL_ISOLATION:-} == 1 && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "$PROG: installing Debian's ${PACKAGES[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -qq "${PACKAGES[@]}" >&2; then
            { apt-get update -qq && apt-get install -y -qq "${PACKAGES[@]}"; } >&2 \
                || die 3 "isolation tools not available: apt-get install ${PACKAGES[*]} failed"
        fi
        need=$(missing)
        [[ -z $need ]] || die 3 "isolation tools not available: still missing $need"
    else
        die 3 "isolation tools not available: missing $need (install Debian's ${PACKAGES[*]}, or set COMPUTENET_INSTALL_ISOLATION=1 as root on Debian)"
    fi
fi

[[ $(id -u) -eq 0 ]] || die 3 "podman's image store for tasks is root's: run as root"
if ! podman image exists "$IMAGE" 2>/dev/null; then
    busybox=$(command -v busybox || echo /bin/busybox)
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/bin" "$root/tmp"
    cp "$busybox" "$root/bin/busybox"
    for applet in "${APPLETS[@]}"; do
        ln -s busybox "$root/bin/$applet"
    done
    tar -C "$root" -cf "$root.tar" .
    podman import -q --change 'ENV PATH=/bin' "$root.tar" "$IMAGE" >/dev/null \
        || die 1 "podman import failed"
    rm -f "$root.tar"
fi
echo "$IMAGE"
