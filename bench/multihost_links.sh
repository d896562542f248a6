#!/usr/bin/env bash
# Training step time of the ~110M Llama (bench_mesh) across two simulated hosts joined by a
# shaped link, with and without overlapping the FSDP collectives with compute, against the same
# mesh on one host; and the progress microbenchmark (bench_multihost_progress) on each link.
#
#   sudo bash bench/multihost_links.sh [BIN_DIR] [REPEATS]
#     BIN_DIR   where bench_mesh and bench_multihost_progress are (default build/bin)
#     REPEATS   runs of each configuration, interleaved (default 3); figures are medians
#   environment: ROWS, SEQ (global batch, default 2 x 256), STEPS (per run, default 3: the first
#   is a warm-up), MESHES (default "2x1 1x2"), LINKS (default "host 10gbit 1gbit"),
#   PROGRESS=0 skips the microbenchmark.
#
# Hosts: two network namespaces and a veth pair, as tests/scripts/multihost.sh (the set-up is
# tests/scripts/netns_hosts.sh); a mesh's 2 ranks go one per host (--map-by node), so every
# collective crosses the link. Links: `tc qdisc ... tbf rate 1gbit|10gbit` on both veth ends
# (netem, and so added latency, is not available here); "veth" the two hosts over the unshaped
# veth pair (TCP at whatever the CPUs allow); "host" is plain mpirun on this machine (shared
# memory). 1 thread per rank. The load average is recorded beside every run.
# Prints a table, and on its last line one JSON object with every run and the medians.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-$ROOT/build/bin}"
REPEATS="${2:-3}"
ROWS="${ROWS:-2}" SEQ="${SEQ:-256}" STEPS="${STEPS:-3}"
MESHES="${MESHES:-2x1 1x2}" LINKS="${LINKS:-host 10gbit 1gbit}" PROGRESS="${PROGRESS:-1}"
skip() { echo "SKIP: $*" >&2; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -x "$BIN/bench_mesh" ] || fail "no $BIN/bench_mesh: build first (scripts/build.sh)"
MH_TIMEOUT=1200
# shellcheck source=../tests/scripts/netns_hosts.sh
. "$ROOT/tests/scripts/netns_hosts.sh"

burst_of() { case "$1" in 1gbit) echo 256kb ;; 10gbit) echo 2mb ;; *) echo 4mb ;; esac; }
# run_on LINK COMMAND...: 2 ranks, one per simulated host over LINK, or both on this machine.
run_on() {
  local link="$1"
  shift
  if [ "$link" = host ]; then
    timeout "$MH_TIMEOUT" mpirun --oversubscribe --bind-to none -np 2 -x OMP_NUM_THREADS "$@"
  else
    on_two_hosts_np 2 node "$@"
  fi
}
current_link=""
use_link() {
  [ "$1" = "$current_link" ] && return
  current_link="$1"
  case "$1" in
    host | veth) shape_link none ;;
    *) shape_link "$1" "$(burst_of "$1")" ;;
  esac
}

RUNS="$WORK/runs.jsonl"
: > "$RUNS"
# record KIND LINK MESH OVERLAP REP: the last line of $WORK/out, tagged, with the load average.
record() {
  local last
  last="$(tail -n 1 "$WORK/out")"
  printf '{"kind":"%s","link":"%s","mesh":"%s","overlap":%s,"rep":%s,"uptime":"%s","result":%s}\n' \
    "$1" "$2" "$3" "$4" "$5" "$(uptime | sed 's/.*load/load/')" "$last" >> "$RUNS"
}

for rep in $(seq 1 "$REPEATS"); do
  for link in $LINKS; do
    use_link "$link"
    if [ "$PROGRESS" = 1 ]; then
      run_on "$link" "$BIN/bench_multihost_progress" --reps 3 > "$WORK/out" 2> "$WORK/err" \
        || fail "bench_multihost_progress on $link: $(cat "$WORK/err")"
      record progress "$link" 2x1 true "$rep"
      echo "rep $rep $link progress: $(grep -v '^{' "$WORK/out" | tr -s ' ' | tr '\n' ';')"
    fi
    for mesh in $MESHES; do
      for overlap in true false; do
        run_on "$link" "$BIN/bench_mesh" "${mesh%x*}" "${mesh#*x}" "$STEPS" --rows "$ROWS" \
          --seq "$SEQ" --overlap_comm "$overlap" > "$WORK/out" 2> "$WORK/err" \
          || fail "bench_mesh $mesh on $link (overlap $overlap): $(cat "$WORK/err")"
        record mesh "$link" "$mesh" "$overlap" "$rep"
        echo "rep $rep $link $mesh overlap=$overlap: $(grep '^mesh' "$WORK/out") [$(uptime | sed 's/.*load/load/')]"
      done
    done
  done
done
shape_link none

python3 - "$RUNS" "$ROWS" "$SEQ" "$STEPS" <<'PY'
import json, statistics, sys, platform, os
runs = [json.loads(l) for l in open(sys.argv[1])]
def med(xs): return statistics.median(xs) if xs else None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
table = []
host_step = {}
for r in runs:
    if r["kind"] == "mesh" and r["link"] == "host":
        host_step.setdefault((r["mesh"], r["overlap"]), []).append(r["result"]["s_per_step"])
keys = sorted({(r["mesh"], r["link"], r["overlap"]) for r in runs if r["kind"] == "mesh"},
              key=lambda k: (k[0], ["host", "veth", "10gbit", "1gbit"].index(k[1]) if k[1] in ["host", "veth", "10gbit", "1gbit"] else 9, not k[2]))
print(f"{'mesh':5} {'link':7} {'overlap':8} {'s/step':>8} {'comm s':>8} {'comm %':>7} {'vs host':>8} {'loads (1 min)'}")
for mesh, link, overlap in keys:
    rs = [r for r in runs if r["kind"] == "mesh" and (r["mesh"], r["link"], r["overlap"]) == (mesh, link, overlap)]
    step = med([r["result"]["s_per_step"] for r in rs])
    comm = med([r["result"]["collectives_s_per_step"] for r in rs])
    # vs the same mesh on one host, blocking (the reference the goal is stated against)
    base = med(host_step.get((mesh, False), []))
    loads = [r["uptime"].split(":")[1].split(",")[0].strip() for r in rs]
    losses = sorted({repr(r["result"]["loss"]) for r in rs})
    row = {"mesh": mesh, "link": link, "overlap": overlap, "runs": len(rs), "s_per_step": step,
           "collectives_s_per_step": comm, "collectives_fraction": comm / step,
           "vs_one_host_blocking": step / base if base else None, "load_1min": loads, "losses": losses}
    table.append(row)
    print(f"{mesh:5} {link:7} {str(overlap):8} {step:8.3f} {comm:8.3f} {100*comm/step:6.1f}% "
          f"{(step/base if base else float('nan')):8.3f} {' '.join(loads)}")
prog = {}
for r in runs:
    if r["kind"] == "progress":
        prog.setdefault(r["link"], []).append(r["result"])
progress = {}
for link, rs in prog.items():
    modes = rs[0]["seconds"].keys()
    progress[link] = {"allgather_s": med([x["allgather_s"] for x in rs]),
                      "compute_s": med([x["compute_s"] for x in rs]),
                      "seconds": {m: med([x["seconds"][m] for x in rs]) for m in modes},
                      "hidden_fraction": {m: med([x["hidden_fraction"][m] for x in rs]) for m in modes}}
    print(f"progress {link}: " + ", ".join(f"{m} hides {100*v:.0f}%" for m, v in progress[link]["hidden_fraction"].items()))
print(json.dumps({"bench": "multihost_links", "cpu": cpu, "nproc": os.cpu_count(),
                  "batch": [int(sys.argv[2]), int(sys.argv[3])], "steps_per_run": int(sys.argv[4]),
                  "table": table, "progress": progress, "runs": runs}))
PY
