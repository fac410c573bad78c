#!/usr/bin/env bash
# Install Reflex Edge on an NVIDIA Jetson running JetPack 6 (L4T R36, Ubuntu 22.04, Python 3.10).
#
#   sudo firmware/install-jetpack.sh [--dry-run] [--force] [--slot a|b] [--python PY] [--root DIR]
#
# Run it from a checkout (or an unpacked release) on the Jetson. It
#   1. checks JetPack/L4T (/etc/nv_tegra_release: R36 or newer), Python >= 3.10, and TensorRT
#      (python3 -c 'import tensorrt': 10+ for the tensorrt backend; older or missing only warns, the
#      appliance then uses ONNX Runtime) and pycuda (warns);
#   2. creates the `reflex` system user (groups video and render, for the GPU and cameras), the data
#      folder /var/lib/reflex-edge (reflex's, 0750), its updates/ inbox, /etc/reflex-edge and its
#      update-keys/ (root's: the service must not trust keys of its own);
#   3. copies the release into /opt/reflex-edge/slots/a (the files git tracks, or the whole folder
#      without .git/.venv/caches when it is not a checkout), creates its virtualenv with
#      --system-site-packages (so it sees JetPack's tensorrt and pycuda) and pip installs the package
#      with the [jetson] extra, or without it when the extra cannot be installed;
#   4. writes the slot's marker, points /opt/reflex-edge/current at it (atomically), installs the units
#      of systemd/ into /etc/systemd/system and enables reflex-edge.service, reflex-firstboot.service
#      and reflex-update.timer (not reflex-blueloop.service: the blue loop usually runs elsewhere).
# Every check runs before anything is changed; a failed check changes nothing (exit status 1).
# --dry-run runs the checks and prints every step it would take, changes nothing, and exits 1 when a
# check fails (on anything that is not a Jetson it says so). --root DIR prefixes every path (the dry run
# of the tests); a real run only installs into /. Later releases arrive as signed update bundles
# (firmware/update.py), not through this script: --force reinstalls over an existing installation.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT=/
DRY=0
FORCE=0
SLOT=a
PY=/usr/bin/python3
SERVICE_USER=reflex
MIN_L4T=36
MIN_TRT=10
FAILS=()

usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; }
say() { printf 'install-jetpack: %s\n' "$*"; }
warn() { printf 'install-jetpack: warning: %s\n' "$*" >&2; }
fail() { FAILS+=("$*"); printf 'install-jetpack: FAIL: %s\n' "$*" >&2; }
# run CMD...: run it, or in a dry run print it (shell-quoted, as it would run).
run() {
    if ((DRY)); then
        printf 'would run:'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

while (($#)); do
    case "$1" in
        --dry-run) DRY=1 ;;
        --force) FORCE=1 ;;
        --slot) SLOT="${2:?--slot needs a or b}"; shift ;;
        --python) PY="${2:?--python needs a path}"; shift ;;
        --root) ROOT="${2:?--root needs a folder}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install-jetpack: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ "$SLOT" == a || "$SLOT" == b ]] || { echo "install-jetpack: --slot is a or b" >&2; exit 2; }
ROOT="${ROOT%/}"
if ((!DRY)) && [[ -n "$ROOT" ]]; then
    echo "install-jetpack: --root is for --dry-run; a real install runs on the device itself" >&2
    exit 2
fi

OPT="$ROOT/opt/reflex-edge"
SLOT_DIR="$OPT/slots/$SLOT"
ETC="$ROOT/etc/reflex-edge"
DATA="$ROOT/var/lib/reflex-edge"
UNITS="$ROOT/etc/systemd/system"
VERSION="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$SRC/pyproject.toml" | head -n 1)"

# -- checks (read only) --------------------------------------------------------------------------

check_jetson() {
    local release="$ROOT/etc/nv_tegra_release" line major revision
    if [[ ! -f "$release" ]]; then
        fail "this is not a Jetson: $release not found (no JetPack/L4T). On other Linux machines run the appliance with ./reflex run (README)"
        return
    fi
    # e.g. "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: ..."
    line="$(head -n 1 "$release")"
    major="$(sed -n 's/^# R\([0-9][0-9]*\) (release).*/\1/p' <<<"$line")"
    revision="$(sed -n 's/.*REVISION: \([0-9.][0-9.]*\).*/\1/p' <<<"$line")"
    if [[ -z "$major" ]]; then
        fail "cannot read the L4T release from $release: $line"
    elif ((major < MIN_L4T)); then
        fail "L4T R$major.$revision is JetPack 5 or older; Reflex Edge needs JetPack 6 (L4T R$MIN_L4T+, Python 3.10)"
    else
        say "L4T R$major.$revision (JetPack 6 or newer): OK"
    fi
}

check_python() {
    local version
    if ! version="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"; then
        fail "cannot run $PY"
        return
    fi
    if "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
        say "Python $version ($PY): OK"
    else
        fail "Python $version ($PY) is older than 3.10"
    fi
    if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
        fail "$PY cannot make virtualenvs (apt-get install python3-venv)"
    fi
}

check_tensorrt() {
    local trt major
    if ! trt="$("$PY" -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null)"; then
        warn "no TensorRT Python module for $PY (JetPack's python3-libnvinfer): the appliance will use ONNX Runtime"
        return
    fi
    major="${trt%%.*}"
    if [[ "$major" =~ ^[0-9]+$ ]] && ((major >= MIN_TRT)); then
        say "TensorRT $trt: OK"
    else
        warn "TensorRT $trt is older than $MIN_TRT: the tensorrt backend needs $MIN_TRT+ (JetPack 6.1+); ONNX Runtime is used"
    fi
    if "$PY" -c 'import pycuda' 2>/dev/null; then
        say "pycuda: OK"
    else
        warn "no pycuda for $PY: pip will try to build it from the [jetson] extra (needs the CUDA toolkit)"
    fi
}

check_install() {
    if [[ -e "$OPT/current" || -L "$OPT/current" ]] && ((!FORCE)); then
        fail "Reflex Edge is installed already ($OPT/current -> $(readlink "$OPT/current" || true)): update it with signed bundles (firmware/update.py), or pass --force to reinstall slot $SLOT"
    fi
    if [[ $(id -u) -ne 0 ]] && ((!DRY)); then
        fail "run it as root (sudo)"
    fi
    [[ -n "$VERSION" ]] || fail "no version in $SRC/pyproject.toml"
}

# -- steps ---------------------------------------------------------------------------------------

create_user() {
    local group groups=()
    if id "$SERVICE_USER" >/dev/null 2>&1 && [[ -z "$ROOT" ]]; then
        say "user $SERVICE_USER exists"
    else
        run useradd --system --user-group --home-dir /var/lib/reflex-edge --no-create-home \
            --shell /usr/sbin/nologin --comment "Reflex Edge appliance" "$SERVICE_USER"
    fi
    for group in video render; do
        getent group "$group" >/dev/null 2>&1 && groups+=("$group")
    done
    if ((${#groups[@]})); then
        run usermod --append --groups "$(IFS=,; echo "${groups[*]}")" "$SERVICE_USER"
    fi
}

create_dirs() {
    run install -d -m 0755 -o root -g root "$OPT" "$OPT/slots" "$ETC" "$ETC/update-keys" "$ETC/models"
    run install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$DATA"
    run install -d -m 0755 -o root -g root "$DATA/updates"
    run install -d -m 0700 -o root -g root "$DATA/backups"
}

copy_release() {
    run rm -rf "$SLOT_DIR"
    run install -d -m 0755 "$SLOT_DIR"
    if git -C "$SRC" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        local count
        count="$(git -C "$SRC" ls-files | wc -l)"
        say "copying the $count files git tracks in $SRC to $SLOT_DIR"
        if ((DRY)); then
            echo "would run: git -C $SRC ls-files -z | tar -C $SRC --null -T - -cf - | tar -C $SLOT_DIR -xf -"
        else
            git -C "$SRC" ls-files -z | tar -C "$SRC" --null -T - -cf - | tar -C "$SLOT_DIR" --no-same-owner -xf -
        fi
    else
        say "copying $SRC (not a git checkout) to $SLOT_DIR"
        if ((DRY)); then
            echo "would run: tar -C $SRC --exclude=.git --exclude=.venv --exclude=__pycache__ -cf - . | tar -C $SLOT_DIR -xf -"
        else
            tar -C "$SRC" --exclude=.git --exclude=.venv --exclude=__pycache__ --exclude=.pytest_cache -cf - . \
                | tar -C "$SLOT_DIR" --no-same-owner -xf -
        fi
    fi
}

make_venv() {
    local venv="$SLOT_DIR/.venv" pip
    run "$PY" -m venv --system-site-packages "$venv"
    pip=("$venv/bin/python" -m pip install --disable-pip-version-check --no-cache-dir)
    [[ -d "$SRC/wheels" ]] && pip+=(--no-index --find-links "$SLOT_DIR/wheels")
    if ((DRY)); then
        run "${pip[@]}" -e "${SLOT_DIR}[jetson]"
        echo "  (when the [jetson] extra cannot be installed: ${pip[*]} -e $SLOT_DIR)"
    elif ! "${pip[@]}" -e "${SLOT_DIR}[jetson]"; then
        warn "the [jetson] extra did not install; installing without it (TensorRT from the system, if any)"
        "${pip[@]}" -e "$SLOT_DIR"
    fi
}

write_marker() {
    local schema='null'
    if ((!DRY)); then
        schema="$("$SLOT_DIR/.venv/bin/python" -c 'from edge.store.migrations import LATEST; print(LATEST)')"
    fi
    local marker
    marker="$(printf '{\n "installed_by": "install-jetpack.sh",\n "schema": %s,\n "version": "%s"\n}' "$schema" "$VERSION")"
    if ((DRY)); then
        echo "would write $SLOT_DIR/.reflex-release.json: version $VERSION, the slot's event log schema"
    else
        printf '%s\n' "$marker" >"$SLOT_DIR/.reflex-release.json"
    fi
}

switch_current() {
    run ln -sfn "slots/$SLOT" "$OPT/.current.new"
    run mv -T "$OPT/.current.new" "$OPT/current"
}

install_units() {
    local unit enable=()
    run install -d -m 0755 "$UNITS"
    for unit in "$SRC"/systemd/*.service "$SRC"/systemd/*.timer; do
        [[ -e "$unit" ]] || continue
        run install -m 0644 "$unit" "$UNITS/$(basename "$unit")"
    done
    for unit in reflex-edge.service reflex-firstboot.service reflex-update.timer; do
        if [[ -e "$SRC/systemd/$unit" ]]; then
            enable+=("$unit")
        else
            warn "systemd/$unit is missing: not enabled"
        fi
    done
    if [[ -z "$ROOT" ]]; then
        run systemctl daemon-reload
        ((${#enable[@]})) && run systemctl enable "${enable[@]}"
    else
        ((${#enable[@]})) && run systemctl --root="$ROOT" enable "${enable[@]}"
    fi
    return 0
}

# -- main ----------------------------------------------------------------------------------------

((DRY)) && say "dry run: checking and listing the steps; nothing is changed"
check_jetson
check_python
check_tensorrt
check_install
if ((${#FAILS[@]})) && ((!DRY)); then
    say "nothing was changed (${#FAILS[@]} failed checks)"
    exit 1
fi
say "installing Reflex Edge $VERSION from $SRC into $SLOT_DIR"
create_user
create_dirs
copy_release
make_venv
write_marker
switch_current
install_units
if ((${#FAILS[@]})); then
    say "dry run: a real run would stop before the first step: ${FAILS[*]}"
    exit 1
fi
if ((DRY)); then
    say "dry run: the checks passed; run it again without --dry-run to install"
    exit 0
fi
say "installed $VERSION in $SLOT_DIR; $OPT/current -> slots/$SLOT"
say "next: put the provisioning bundle (tools/provision) on /boot/reflex-provision.tar.gz and reboot,"
say "      or write $ETC/config.yaml and run: systemctl start reflex-edge"
