#!/bin/sh
# Entrypoint of the ringbridge Kamailio dispatcher image (docker/kamailio/Dockerfile).
#
# Writes the dispatcher list (set 1 = the gateway nodes) from NODES, then runs kamailio with
# kamailio.cfg in the foreground (-DD -E: no daemon, log on stderr), the cfg's defines taken from
# environment variables of the same names (see the cfg's header and docker/kamailio/README.md).
#
#   NODES            required: the gateway nodes, SIP URIs separated by spaces or commas, e.g.
#                    "sip:10.0.0.11:5060 sip:10.0.0.12:5060;transport=tcp"
#   SIP_ADDR         required: the address Kamailio listens on (UDP and TCP), one of this host's
#                    addresses (not 0.0.0.0); it is also the address in its Record-Route
#   SIP_PORT, PING_INTERVAL_S, NODE_TIMEOUT_MS, FR_TIMER_MS, FR_INV_MS, DS_ALG, WORKERS,
#   LOG_LEVEL, CTL_SOCKET
#                    the cfg's defines; unset or empty: the cfg's defaults
#   DISPATCHER_LIST  where the list is written     default /etc/ringbridge/dispatcher.list
#   KAMAILIO_CFG     the cfg                       default /etc/ringbridge/kamailio.cfg
#   SHM_MB, PKG_MB   kamailio -m and -M (MB)       default 64 and 8
#
# Arguments are appended to kamailio's command line. The single argument "check" writes the list
# and only checks the cfg with these defines (kamailio -c), then exits.
set -eu
# no globbing when NODES is split into URIs
set -f

die() {
	echo "ringbridge-kamailio: $*" >&2
	exit 64
}

mode=run
if [ "$#" -eq 1 ] && [ "$1" = check ]; then
	mode=check
	shift
fi

cfg=${KAMAILIO_CFG:-/etc/ringbridge/kamailio.cfg}
list=${DISPATCHER_LIST:-/etc/ringbridge/dispatcher.list}

[ -r "$cfg" ] || die "cannot read the cfg $cfg (KAMAILIO_CFG)"
[ -n "${SIP_ADDR:-}" ] || die "SIP_ADDR is not set: the address to listen on, one of this host's addresses"
case "$SIP_ADDR" in
	*[!A-Za-z0-9.:\[\]-]*) die "SIP_ADDR=$SIP_ADDR: expected an IP address or host name" ;;
	0.0.0.0 | :: | "[::]") die "SIP_ADDR=$SIP_ADDR: give one of this host's addresses, not a wildcard" ;;
esac
case "$list$cfg" in
	*'"'*) die "DISPATCHER_LIST and KAMAILIO_CFG must not contain double quotes" ;;
esac

# The dispatcher list: "setid destination flags priority", set 1, flags 0 (active until a probe
# fails), priority 0 (the format test/helpers/kamailio.ts writes).
[ -n "${NODES:-}" ] || die 'NODES is not set: the gateway nodes, e.g. NODES="sip:10.0.0.11:5060 sip:10.0.0.12:5060"'
lines=
for uri in $(echo "$NODES" | tr ',' ' '); do
	case "$uri" in
		sip:?*) ;;
		*) die "NODES: $uri is not a sip: URI (e.g. sip:10.0.0.11:5060)" ;;
	esac
	lines="${lines}1 $uri 0 0
"
done
[ -n "$lines" ] || die "NODES=$NODES names no node"
tmp="$list.tmp.$$"
printf '# setid destination flags priority (written from NODES by %s)\n%s' "$0" "$lines" >"$tmp" ||
	die "cannot write $tmp"
mv -f "$tmp" "$list"

# kamailio's arguments, prepended to the ones given to this script.
for name in LOG_LEVEL WORKERS DS_ALG FR_INV_MS FR_TIMER_MS NODE_TIMEOUT_MS PING_INTERVAL_S SIP_PORT; do
	# numeric defines: passed bare when set
	eval "value=\${$name:-}"
	[ -n "$value" ] || continue
	case "${value#-}" in
		"" | *[!0-9]*) die "$name=$value: expected a number" ;;
	esac
	set -- -A "$name=$value" "$@"
done
if [ -n "${CTL_SOCKET:-}" ]; then
	# a string define: quoted for the cfg
	case "$CTL_SOCKET" in
		*'"'*) die "CTL_SOCKET must not contain double quotes" ;;
	esac
	set -- -A "CTL_SOCKET=\"$CTL_SOCKET\"" "$@"
fi
for name in SHM_MB PKG_MB; do
	eval "value=\${$name:-1}"
	case "$value" in
		"" | *[!0-9]*) die "$name=$value: expected a number of MB" ;;
	esac
done
set -- -f "$cfg" -DD -E -m "${SHM_MB:-64}" -M "${PKG_MB:-8}" \
	-A "SIP_ADDR=$SIP_ADDR" -A "DISPATCHER_LIST=\"$list\"" "$@"

if [ "$mode" = check ]; then
	exec kamailio -c "$@"
fi
echo "ringbridge-kamailio: $(grep -c '^1 ' "$list") node(s) in $list; kamailio $*" >&2
exec kamailio "$@"
