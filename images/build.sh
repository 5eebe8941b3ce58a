#!/bin/sh
# Build Flotilla's test container images locally, without a registry or docker.
#
#   images/build.sh [OUT_DIR]        (or FLOTILLA_IMAGES_OUT=DIR images/build.sh)
#
# Writes one OCI image-layout archive per image into OUT_DIR (default images/out):
#   busybox.tar  flotilla.local/busybox:1.36  busybox-static + applet links, Cmd ["sh"]
#   pause.tar    flotilla.local/pause:3.10    static C /pause (the sandbox image)
#   http.tar     flotilla.local/http:1        busybox httpd on :8080 serving /www, logging
#                                             each request (and
#                                             /cgi-bin/hostname), under a PID 1 shell
#                                             that passes SIGTERM on
# plus OUT_DIR/images.txt: "<archive> <image ref> <manifest digest>" per line.
#
# Reproducible: same inputs (Debian package versions, SOURCE_DATE_EPOCH) give
# byte-identical archives. Idempotent: it rebuilds into a temp dir and replaces
# the outputs. Needs Debian packages busybox-static, musl-tools, tar, gzip,
# coreutils; installs the first two with apt-get when run as root
# (FLOTILLA_NO_APT=1 to forbid that). Env knobs:
#   SOURCE_DATE_EPOCH   timestamp for files and "created" (default 0 = 1970-01-01)
#   BUSYBOX             path of a static busybox (default /bin/busybox)
#   FLOTILLA_PAUSE_CC   compiler for pause.c (default musl-gcc, else gcc -static)
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-${FLOTILLA_IMAGES_OUT:-$HERE/out}}
EPOCH=${SOURCE_DATE_EPOCH:-0}
BUSYBOX=${BUSYBOX:-/bin/busybox}

REF_BUSYBOX=flotilla.local/busybox:1.36
REF_PAUSE=flotilla.local/pause:3.10
REF_HTTP=flotilla.local/http:1
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "build.sh: $*" >&2; exit 1; }
log() { echo "build.sh: $*" >&2; }

# ---------------------------------------------------------------- prerequisites
pkg_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}
need_pkg() { # need_pkg PACKAGE: install a Debian package if missing (root only)
	pkg_installed "$1" && return 0
	if [ "${FLOTILLA_NO_APT:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		log "installing Debian package $1"
		DEBIAN_FRONTEND=noninteractive apt-get install -y "$1" >&2 ||
			die "apt-get install $1 failed (run apt-get update first?)"
	else
		die "Debian package $1 is missing: apt-get install $1"
	fi
}

for t in tar gzip sha256sum find sort sed stat od; do
	command -v "$t" >/dev/null || die "needs $t"
done
tar --version 2>/dev/null | grep -q 'GNU tar' || die "needs GNU tar"

if [ "$BUSYBOX" = /bin/busybox ]; then
	# the dynamic Debian package "busybox" also owns /bin/busybox: insist on the static one
	need_pkg busybox-static
fi
[ -x "$BUSYBOX" ] || die "no busybox at $BUSYBOX"
# a static ELF has no PT_INTERP (program header type 3); readelf is optional
if command -v readelf >/dev/null && readelf -l "$BUSYBOX" | grep -q 'Requesting program interpreter'; then
	die "$BUSYBOX is dynamically linked; install busybox-static"
fi
BB_VERSION=$("$BUSYBOX" 2>&1 | sed -n '1s/^BusyBox \(v[^ ]*\).*/\1/p')
BB_DEB=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown)

if [ -n "${FLOTILLA_PAUSE_CC:-}" ]; then
	PAUSE_CC=$FLOTILLA_PAUSE_CC
else
	if ! command -v musl-gcc >/dev/null; then
		(need_pkg musl-tools) || log "no musl-gcc: falling back to gcc -static (pause grows from ~17 KB to ~680 KB)"
	fi
	if command -v musl-gcc >/dev/null; then PAUSE_CC=musl-gcc; else PAUSE_CC=gcc; fi
fi
command -v "$PAUSE_CC" >/dev/null || die "no C compiler ($PAUSE_CC) for pause.c: apt-get install musl-tools"

ARCH=$(dpkg --print-architecture 2>/dev/null || uname -m)
case $ARCH in
	x86_64) ARCH=amd64 ;; aarch64) ARCH=arm64 ;;
esac
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)

# ---------------------------------------------------------------- helpers
export LC_ALL=C
umask 022
WORK=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

filesize() { stat -c %s "$1"; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }

# reproducible_tar DIR OUT: ustar, sorted, numeric root owner, fixed mtime, no ./ prefix
reproducible_tar() {
	(cd "$1" && find . -mindepth 1 | sed 's|^\./||' | sort) >"$WORK/tarlist"
	tar -C "$1" --format=ustar --no-recursion --numeric-owner --owner=0 --group=0 \
		--mtime="@$EPOCH" -cf "$2" -T "$WORK/tarlist"
}

# put_blob LAYOUT FILE: move FILE into LAYOUT/blobs/sha256/, print "digest size"
put_blob() {
	_d=$(sha256 "$2")
	_s=$(filesize "$2")
	mkdir -p "$1/blobs/sha256"
	mv -f "$2" "$1/blobs/sha256/$_d"
	chmod 0644 "$1/blobs/sha256/$_d"
	echo "sha256:$_d $_s"
}

# add_layer LAYOUT ROOTDIR: tar + gzip ROOTDIR as a layer blob;
# sets L_DIGEST L_SIZE (compressed blob) and L_DIFFID (uncompressed tar)
add_layer() {
	reproducible_tar "$2" "$WORK/layer.tar"
	L_DIFFID=sha256:$(sha256 "$WORK/layer.tar")
	gzip -n -9 -c "$WORK/layer.tar" >"$WORK/layer.tar.gz"
	rm -f "$WORK/layer.tar"
	set -- $(put_blob "$1" "$WORK/layer.tar.gz")
	L_DIGEST=$1 L_SIZE=$2
}

# write_image NAME REF CONFIG_BODY "LAYER_DESCS" "DIFF_IDS" DESCRIPTION
#   CONFIG_BODY: JSON members of the runtime "config" object
#   LAYER_DESCS / DIFF_IDS: comma-separated JSON fragments
write_image() {
	_name=$1 _ref=$2 _cfg=$3 _layers=$4 _diffids=$5 _desc=$6
	_lay=$WORK/$_name
	mkdir -p "$_lay/blobs/sha256"
	printf '%s' "{\"created\":\"$CREATED\",\"architecture\":\"$ARCH\",\"os\":\"linux\",\"config\":{$_cfg},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$_diffids]},\"history\":[{\"created\":\"$CREATED\",\"created_by\":\"flotilla images/build.sh: $_desc\"}]}" >"$WORK/config.json"
	set -- $(put_blob "$_lay" "$WORK/config.json")
	_cdig=$1 _csize=$2
	printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$_cdig\",\"size\":$_csize},\"layers\":[$_layers],\"annotations\":{\"org.opencontainers.image.created\":\"$CREATED\",\"org.opencontainers.image.description\":\"$_desc\"}}" >"$WORK/manifest.json"
	set -- $(put_blob "$_lay" "$WORK/manifest.json")
	_mdig=$1 _msize=$2
	printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$_lay/oci-layout"
	# io.containerd.image.name: the name "ctr images import" gives the image.
	# org.opencontainers.image.ref.name: the full reference as well, so that
	# "ctr import" without --base-name and skopeo's oci-archive: both find it.
	printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$_mdig\",\"size\":$_msize,\"annotations\":{\"io.containerd.image.name\":\"$_ref\",\"org.opencontainers.image.ref.name\":\"$_ref\"},\"platform\":{\"architecture\":\"$ARCH\",\"os\":\"linux\"}}]}" >"$_lay/index.json"
	chmod 0644 "$_lay/oci-layout" "$_lay/index.json"
	reproducible_tar "$_lay" "$WORK/out/$_name.tar"
	echo "$_name.tar $_ref $_mdig" >>"$WORK/out/images.txt"
	log "$_ref -> $_name.tar (manifest $_mdig)"
}

layer_desc() { # layer_desc DIGEST SIZE
	printf '{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}' "$1" "$2"
}

mkdir -p "$WORK/out"

# ---------------------------------------------------------------- busybox rootfs (shared layer)
R=$WORK/rootfs-busybox
mkdir -p "$R/bin" "$R/etc" "$R/root" "$R/tmp" "$R/proc" "$R/sys" "$R/dev" "$R/var/empty"
chmod 1777 "$R/tmp"
chmod 0700 "$R/root"
cp "$BUSYBOX" "$R/bin/busybox"
chmod 0755 "$R/bin/busybox"
for a in $("$BUSYBOX" --list); do
	case $a in busybox | */*) continue ;; esac
	ln -s busybox "$R/bin/$a"
done
[ -L "$R/bin/sh" ] && [ -L "$R/bin/httpd" ] || die "busybox lacks sh or httpd applets"
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$R/etc/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$R/etc/group"
chmod 0644 "$R/etc/passwd" "$R/etc/group"

LAYOUT_BB=$WORK/busybox
add_layer "$LAYOUT_BB" "$R"
BB_LAYER_DIGEST=$L_DIGEST BB_LAYER_SIZE=$L_SIZE BB_LAYER_DIFFID=$L_DIFFID

write_image busybox "$REF_BUSYBOX" \
	"\"Env\":[\"$PATH_ENV\"],\"Cmd\":[\"sh\"],\"WorkingDir\":\"/\",\"Labels\":{\"org.opencontainers.image.title\":\"busybox\",\"org.opencontainers.image.version\":\"$BB_VERSION\",\"org.flotilla.debian-package\":\"busybox-static=$BB_DEB\"}" \
	"$(layer_desc "$BB_LAYER_DIGEST" "$BB_LAYER_SIZE")" \
	"\"$BB_LAYER_DIFFID\"" \
	"busybox-static $BB_DEB"

# ---------------------------------------------------------------- pause
P=$WORK/rootfs-pause
mkdir -p "$P"
# -ffile-prefix-map keeps the build directory out of the binary (reproducibility)
if [ "$PAUSE_CC" = musl-gcc ] || [ "$PAUSE_CC" = gcc ]; then
	"$PAUSE_CC" -static -Os -s -Wall -Wl,--build-id=none -ffile-prefix-map="$HERE"=. \
		-o "$P/pause" "$HERE/src/pause.c"
else
	"$PAUSE_CC" -static -Os -s -o "$P/pause" "$HERE/src/pause.c"
fi
chmod 0755 "$P/pause"
CC_VERSION=$("$PAUSE_CC" --version 2>/dev/null | sed -n 1p)
LAYOUT_PAUSE=$WORK/pause
add_layer "$LAYOUT_PAUSE" "$P"
# User 65535:65535, Entrypoint /pause: as Kubernetes' own pause image
write_image pause "$REF_PAUSE" \
	"\"User\":\"65535:65535\",\"Env\":[\"$PATH_ENV\"],\"Entrypoint\":[\"/pause\"],\"WorkingDir\":\"/\",\"Labels\":{\"org.opencontainers.image.title\":\"pause\"}" \
	"$(layer_desc "$L_DIGEST" "$L_SIZE")" \
	"\"$L_DIFFID\"" \
	"static pause.c built with $PAUSE_CC ($CC_VERSION)"

# ---------------------------------------------------------------- http = busybox layer + /www layer
H=$WORK/rootfs-http
mkdir -p "$H/www/cgi-bin"
cp "$HERE/src/http/entrypoint" "$H/entrypoint"
chmod 0755 "$H/entrypoint"
cp "$HERE/src/http/www/index.html" "$H/www/index.html"
cp "$HERE/src/http/www/cgi-bin/hostname" "$H/www/cgi-bin/hostname"
chmod 0644 "$H/www/index.html"
chmod 0755 "$H/www/cgi-bin/hostname"
LAYOUT_HTTP=$WORK/http
mkdir -p "$LAYOUT_HTTP/blobs/sha256"
cp "$LAYOUT_BB/blobs/sha256/${BB_LAYER_DIGEST#sha256:}" "$LAYOUT_HTTP/blobs/sha256/"
add_layer "$LAYOUT_HTTP" "$H"
write_image http "$REF_HTTP" \
	"\"Env\":[\"$PATH_ENV\"],\"Entrypoint\":[\"/entrypoint\"],\"Cmd\":[\"httpd\",\"-f\",\"-vv\",\"-p\",\"8080\",\"-h\",\"/www\"],\"WorkingDir\":\"/\",\"ExposedPorts\":{\"8080/tcp\":{}},\"Labels\":{\"org.opencontainers.image.title\":\"http\"}" \
	"$(layer_desc "$BB_LAYER_DIGEST" "$BB_LAYER_SIZE"),$(layer_desc "$L_DIGEST" "$L_SIZE")" \
	"\"$BB_LAYER_DIFFID\",\"$L_DIFFID\"" \
	"busybox httpd on :8080 serving /www"

# ---------------------------------------------------------------- publish
mkdir -p "$OUT"
for f in busybox.tar pause.tar http.tar images.txt; do
	chmod 0644 "$WORK/out/$f"
	mv -f "$WORK/out/$f" "$OUT/$f.new"
	mv -f "$OUT/$f.new" "$OUT/$f"
done
log "wrote $OUT"
cat "$OUT/images.txt"
