# `load-tests/run compare`: framecache, nginx proxy_cache and Varnish side by side. Sourced by
# load-tests/run (which provides start, stop, free_port, wait_ready, start_camsim,
# start_framecache, k6_run, camsim_stats and the $work folder).
#
# Hit-heavy: the three serve the same camsim frames from a warm cache (rounds alternate, in the
# order of `round_order`). Miss-heavy: each round starts the target afresh (a cold cache) and
# asks for every (owner, camera) once, four hubs at the same instant. CPU seconds are utime +
# stime of the target's processes (nginx master and workers; varnishd manager and child) from
# /proc; k6's own CPU is reported beside it, since k6 shares the machine and is what limits the
# hit rounds.

nginx_bin() { command -v nginx || echo /usr/sbin/nginx; }

# Fills @NAME@ placeholders of TEMPLATE into OUT: fill TEMPLATE OUT NAME=VALUE...
fill() {
  python3 - "$@" <<'PY'
import sys
template, out, *pairs = sys.argv[1:]
text = open(template).read()
for pair in pairs:
    name, _, value = pair.partition("=")
    text = text.replace(f"@{name}@", value)
import re
if re.search(r"@[A-Z_]+@", text):
    sys.exit(f"{template}: a placeholder is left unfilled")
open(out, "w").write(text)
PY
}

# Starts nginx with TTL (e.g. 600s); sets target_url and target_pid.
start_nginx() {
  local ttl=$1 dir=$work/nginx cache
  rm -rf "$dir" && mkdir -p "$dir"
  if [[ -d /dev/shm && -w /dev/shm ]]; then
    cache=$(mktemp -d /dev/shm/framecache-load-nginx.XXXXXX)
  else
    cache=$dir/cache
  fi
  scratch+=("$cache")
  # nginx's workers drop to another user when it runs as root: they must write the cache.
  chmod 0777 "$dir" "$cache"
  local port
  port=$(free_port)
  fill "$repo/load-tests/peers/nginx.conf" "$dir/nginx.conf" "DIR=$dir" "CACHE=$cache" \
    "LISTEN=127.0.0.1:$port" "ORIGIN=127.0.0.1:$camsim_port" "TTL=$ttl"
  start "$dir/stderr.log" "$(nginx_bin)" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
  target_pid=$started
  target_url=http://127.0.0.1:$port
  wait_port "$port" "$dir/error.log"
}

# Starts varnishd with TTL; sets target_url and target_pid.
start_varnish() {
  local ttl=$1 dir=$work/varnish
  rm -rf "$dir" && mkdir -p "$dir"
  local port
  port=$(free_port)
  fill "$repo/load-tests/peers/varnish.vcl" "$dir/varnish.vcl" "ORIGIN_HOST=127.0.0.1" \
    "ORIGIN_PORT=$camsim_port" "TTL=$ttl"
  # -F: foreground, so the pid is ours; -n: own work folder; -T none: no management port;
  # -j none: no privilege drop (a loopback test). Two thread pools (one per core), Varnish's
  # default thread counts; frames in 256 MiB of memory, as framecache's cache.max_bytes.
  start "$dir/varnishd.log" /usr/sbin/varnishd -F -n "$dir/instance" -j none -T none \
    -a "127.0.0.1:$port" -f "$dir/varnish.vcl" -s malloc,256m -p thread_pools=2
  target_pid=$started
  target_url=http://127.0.0.1:$port
  wait_port "$port" "$dir/varnishd.log"
}

# Waits (at most 20 s) until something accepts on PORT.
wait_port() {
  local port=$1 log=$2
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "load-tests/run: nothing listens on $port; log:" >&2
  tail -n 30 "$log" >&2
  exit 1
}

# CPU seconds used so far by PID and its descendants.
cpu_seconds() {
  python3 "$repo/load-tests/report.py" cpu "$1"
}

start_target() {
  # start_target NAME TTL_SECS [framecache config overrides...]
  local name=$1 ttl=$2
  shift 2
  target=$name
  case $name in
    framecache)
      start_framecache "$@"
      target_pid=$proxy_pid target_url=$hub_url
      ;;
    nginx) start_nginx "${ttl}s" ;;
    varnish) start_varnish "${ttl}s" ;;
  esac
}

# Runs one measured k6 run of WORKLOAD against the current target as round ROUND.
measure() {
  local workload=$1 round=$2
  local name=$workload-$round-$target
  camsim_stats "$work/$name.camsim.before.json"
  local cpu_before cpu_after rc=0
  cpu_before=$(cpu_seconds "$target_pid")
  # The load generator's own CPU: `times` (a builtin, so no fork) gives the CPU of this
  # shell's waited-for children, of which k6 is the only one in between.
  times >"$work/$name.k6times.before"
  k6_run compare.js "$name" -e "WORKLOAD=$workload" -e "PAIRS=$pairs" || rc=$?
  times >"$work/$name.k6times.after"
  cpu_after=$(cpu_seconds "$target_pid")
  camsim_stats "$work/$name.camsim.after.json"
  echo "$cpu_before $cpu_after" >"$work/$name.cpu"
  echo "$name" >>"$work/run-order"
  echo "$workload round $round $target: k6 exit $rc"
  if ((rc != 0)); then
    echo "k6 failed on $target ($workload); see $work/$name.k6.out" >&2
    exit 1
  fi
}

# The index into (framecache nginx varnish) of the I-th target (0-2) of round ROUND (from 1):
# rotation ROUND-1, reversed in even rounds. Six rounds run every order once, so that no target
# always runs first, or always right after the same other one.
round_order() {
  local round=$1 i=$2
  ((round % 2 == 0)) && i=$((2 - i))
  echo $(((round - 1 + i) % 3))
}

count_pairs() {
  curl -fsS --max-time 5 "$camsim_url/topology" |
    python3 -c 'import json, sys; print(sum(len(c) for c in json.load(sys.stdin).values()))'
}

run_compare() {
  local targets=(framecache nginx varnish) round i order
  scratch=()
  trap 'cleanup; rm -rf "${scratch[@]}"' EXIT

  echo "== hit-heavy: warm caches, ${vus:-32} hubs polling back to back, ${duration:-10s} rounds"
  start_camsim compare_hit
  pairs=$(count_pairs)
  declare -A pid_of url_of
  for t in "${targets[@]}"; do
    # Nothing expires during the hit rounds (framecache: 600 s fresh; peers: 600 s TTL).
    start_target "$t" 600 cache.latest_fresh_ms=600000
    pid_of[$t]=$target_pid url_of[$t]=$target_url
    k6_run compare.js "warm-$t" -e WORKLOAD=warm -e "PAIRS=$pairs" ||
      { echo "warm-up of $t failed; see $work/warm-$t.k6.out" >&2; exit 1; }
  done
  for round in $(seq "$rounds"); do
    for i in 0 1 2; do
      order=$(round_order "$round" "$i")
      target=${targets[$order]} target_pid=${pid_of[${targets[$order]}]} target_url=${url_of[${targets[$order]}]}
      measure hit "$round"
    done
  done
  for t in "${targets[@]}"; do stop "${pid_of[$t]}"; done
  stop "$camsim_pid"

  echo "== miss-heavy: cold caches, every (owner, camera) once, 4 hubs at the same instant"
  start_camsim compare_miss
  pairs=$(count_pairs)
  # camsim renders each camera's frame on first request: render them all before measuring.
  start_target framecache 1
  k6_run compare.js warm-camsim -e WORKLOAD=warm -e "PAIRS=$pairs" ||
    { echo "camsim warm-up failed; see $work/warm-camsim.k6.out" >&2; exit 1; }
  stop "$target_pid"
  for round in $(seq "$rounds"); do
    for i in 0 1 2; do
      order=$(round_order "$round" "$i")
      # A fresh instance each round: every key is cold. Freshness 1 s for all three.
      start_target "${targets[$order]}" 1
      measure miss "$round"
      stop "$target_pid"
    done
  done
  stop "$camsim_pid"

  python3 "$repo/load-tests/report.py" compare --dir "$work" --rounds "$rounds" \
    --profile "$profile" --command "load-tests/run compare${duration:+ --duration $duration}${vus:+ --vus $vus} --rounds $rounds"
}
