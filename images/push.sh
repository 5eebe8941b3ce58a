#!/bin/sh
# Push the images built by images/build.sh to a registry, with skopeo (no docker needed).
#
#   images/push.sh REGISTRY [OUT_DIR]
#
# REGISTRY is host[:port][/path prefix], e.g. 127.0.0.1:5000 or registry.example.com/team.
# OUT_DIR is where build.sh wrote its archives (default images/out, or
# $FLOTILLA_IMAGES_OUT); every "<archive> <image ref> <digest>" line of OUT_DIR/images.txt
# is pushed as REGISTRY/<name>:<tag>, the name being the ref's last path component:
#   busybox.tar  flotilla.local/busybox:1.36  ->  REGISTRY/busybox:1.36
#   pause.tar    flotilla.local/pause:3.10    ->  REGISTRY/pause:3.10
#   http.tar     flotilla.local/http:1        ->  REGISTRY/http:1
# Env knobs:
#   REGISTRY_CREDS        user:password for a registry that asks for them
#   REGISTRY_TLS_VERIFY   false for a registry on plain HTTP or with a self-signed
#                         certificate (default: false for localhost / 127.0.0.1, else true)
# Then name the pushed images in pods, e.g. image: 127.0.0.1:5000/busybox:1.36, with an
# imagePullSecret when the registry asks for a password.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
die() { echo "push.sh: $*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: images/push.sh REGISTRY [OUT_DIR]"
REGISTRY=${1%/}
OUT=${2:-${FLOTILLA_IMAGES_OUT:-$HERE/out}}
command -v skopeo >/dev/null || die "needs skopeo (apt-get install skopeo)"
[ -f "$OUT/images.txt" ] || die "no $OUT/images.txt: run images/build.sh $OUT first"

case "$REGISTRY" in
localhost | localhost:* | localhost/* | 127.* ) default_verify=false ;;
*) default_verify=true ;;
esac
VERIFY=${REGISTRY_TLS_VERIFY:-$default_verify}

while read -r archive ref _digest; do
	[ -n "$archive" ] || continue
	name=${ref##*/}
	dest="$REGISTRY/$name"
	echo "push.sh: $archive -> $dest" >&2
	if [ -n "${REGISTRY_CREDS:-}" ]; then
		skopeo copy --quiet --dest-tls-verify="$VERIFY" --dest-creds "$REGISTRY_CREDS" \
			"oci-archive:$OUT/$archive" "docker://$dest"
	else
		skopeo copy --quiet --dest-tls-verify="$VERIFY" \
			"oci-archive:$OUT/$archive" "docker://$dest"
	fi
done <"$OUT/images.txt"
