# Two simulated hosts on one machine, sourced by tests/scripts/multihost.sh and
# bench/multihost_links.sh: two network namespaces joined by a veth pair (10.231.0.1 and .2),
# each with its own host name, and Open MPI launching over TCP between them through an rsh agent
# that runs `ip netns exec`. The caller defines skip() and fail() first; this file sets WORK (a
# temporary folder removed on exit unless KEEP is set) and installs the EXIT trap.
# Defines:
#   on_two_hosts ARGS...          mpirun -np 4, ranks 0-1 on host 1 and 2-3 on host 2
#   on_two_hosts_np NP MAP ARGS... mpirun -np NP --map-by MAP (slot: fill host 1 first; node:
#                                 alternate hosts)
#   on_one_host ARGS...           mpirun --oversubscribe -np 4 on this machine alone
#   shape_link RATE BURST         a tbf qdisc of RATE (e.g. 1gbit, 10gbit) and BURST (e.g. 1mb)
#                                 on both veth ends; shape_link none removes it
# MH_TIMEOUT (default 120) bounds every mpirun, in seconds.
[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces"
for tool in ip unshare mpirun timeout; do
  command -v "$tool" > /dev/null || skip "needs $tool"
done
mpirun --version 2>/dev/null | grep -q "Open MPI" || skip "needs Open MPI's mpirun (plm_rsh_agent)"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
# Unique names (this shell's pid) so that parallel runs do not collide.
NS1="mh$$a" NS2="mh$$b" VETH1="mh$$a" VETH2="mh$$b"
IP1=10.231.0.1 IP2=10.231.0.2 SUBNET=10.231.0.0/24
export MH_NS1="$NS1" MH_NS2="$NS2" MH_IP1="$IP1" MH_IP2="$IP2"
export MH_HOST1="mh$$-host1" MH_HOST2="mh$$-host2"
export MH_MOUNTS1="" MH_MOUNTS2=""  # "SRC=DST ..." bind mounts private to that host
MH_TIMEOUT="${MH_TIMEOUT:-120}"
WORK="$(mktemp -d)"

cleanup() {
  local ns pid
  for ns in "$NS1" "$NS2"; do
    [ -e "/run/netns/$ns" ] || continue
    # Processes left in the namespaces by a failed run (ranks, orted): all started here.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null  # takes its end of the veth pair, and so the pair, with it
  done
  ip link del "$VETH1" 2>/dev/null  # only if the pair never left this namespace
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$NS1" 2>/dev/null || skip "cannot create a network namespace (ip netns add)"
ip netns add "$NS2" || fail "ip netns add $NS2"
ip netns exec "$NS1" true 2>/dev/null || skip "cannot enter a network namespace (ip netns exec)"
unshare --uts --mount true 2>/dev/null || skip "cannot unshare UTS and mount namespaces"
ip link add "$VETH1" type veth peer name "$VETH2" || skip "cannot create a veth pair"
ip link set "$VETH1" netns "$NS1" && ip link set "$VETH2" netns "$NS2" || fail "move the veth ends"
ip -n "$NS1" addr add "$IP1/24" dev "$VETH1" && ip -n "$NS2" addr add "$IP2/24" dev "$VETH2" \
  || fail "address the veth ends"
for ns in "$NS1" "$NS2"; do ip -n "$ns" link set lo up || fail "lo up in $ns"; done
ip -n "$NS1" link set "$VETH1" up && ip -n "$NS2" link set "$VETH2" up || fail "veth up"

# Open MPI's rsh agent: `agent [options] HOST COMMAND...` runs COMMAND (one shell string, as ssh
# would) on the simulated HOST: in its network namespace, under its host name, in a mount
# namespace of its own with that host's private bind mounts.
cat > "$WORK/agent" <<'AGENT'
#!/usr/bin/env bash
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
host="$1"; shift
case "$host" in
  "$MH_IP1") ns="$MH_NS1" name="$MH_HOST1" mounts="$MH_MOUNTS1" ;;
  "$MH_IP2") ns="$MH_NS2" name="$MH_HOST2" mounts="$MH_MOUNTS2" ;;
  *) echo "agent: unknown host '$host'" >&2; exit 255 ;;
esac
exec ip netns exec "$ns" unshare --uts --mount sh -c '
  hostname "$0" || exit 255
  for m in $1; do mount --bind "${m%%=*}" "${m#*=}" || exit 255; done
  eval "$2"' "$name" "$mounts" "$*"
AGENT
chmod +x "$WORK/agent"
printf '%s slots=2\n%s slots=2\n' "$IP1" "$IP2" > "$WORK/hostfile"

on_two_hosts_np() {
  local np="$1" map="$2"
  shift 2
  "$WORK/agent" "$IP1" "$(printf '%q ' timeout "$MH_TIMEOUT" mpirun -np "$np" \
    --hostfile "$WORK/hostfile" --map-by "$map" --bind-to none --mca plm_rsh_agent "$WORK/agent" \
    --mca btl tcp,self --mca btl_tcp_if_include "$SUBNET" --mca oob_tcp_if_include "$SUBNET" \
    -x OMP_NUM_THREADS "$@")"
}
# `mpirun -np 4 ARGS` started on host 1, ranks 0-1 there and 2-3 on host 2, TCP over the veth
# pair only.
on_two_hosts() { on_two_hosts_np 4 slot "$@"; }
# The same 4 ranks on this machine alone (the mpi tests' flags).
on_one_host() { timeout "$MH_TIMEOUT" mpirun --oversubscribe -np 4 "$@"; }

shape_link() {
  local dev ns
  for pair in "$NS1:$VETH1" "$NS2:$VETH2"; do
    ns="${pair%%:*}" dev="${pair#*:}"
    ip netns exec "$ns" tc qdisc del dev "$dev" root 2>/dev/null
    [ "$1" = none ] && continue
    # latency: how long a packet may wait in the queue before it is dropped.
    ip netns exec "$ns" tc qdisc add dev "$dev" root tbf rate "$1" burst "$2" latency 50ms \
      || fail "tc qdisc add dev $dev root tbf rate $1"
  done
}

on_two_hosts sh -c 'echo "$OMPI_COMM_WORLD_RANK $(hostname)"' > "$WORK/where" 2> "$WORK/err" \
  || fail "mpirun over the two namespaces: $(cat "$WORK/err")"
[ "$(sort "$WORK/where" | tr '\n' ' ')" = "0 $MH_HOST1 1 $MH_HOST1 2 $MH_HOST2 3 $MH_HOST2 " ] \
  || fail "ranks are not 2 per host: $(cat "$WORK/where")"
