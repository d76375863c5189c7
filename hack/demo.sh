#!/usr/bin/env bash
# Capacity follows demand, end to end: a compressed school day and holiday for
# an online-education tenant, on the local cluster, recorded as a timeline.
#
#   hack/demo.sh        bring the cluster up (idempotent), build and run the
#                       operator for the demo namespace, drive simulated live
#                       sessions through a quiet morning, an after-school
#                       evening, a holiday with its peak and its end under load
#                       (the ceiling ramping down), and falling load; write
#                       docs/demo/timeline.csv and render docs/demo/timeline.svg
#
# Environment:
#   DEMO_NAMESPACE      namespace of the demo tenant (default demo-edu)
#   DEMO_TAIL_SECONDS   how long to keep watching after the holiday ends, for
#                       the ceiling's ramp down and the HPA's scale-down (default
#                       780; the demo stops earlier once the replicas have settled)
#   DEMO_OUT            output folder (default docs/demo)
#
# The operator started here is stopped on exit; the cluster and the demo
# namespace stay (kubectl delete ns demo-edu removes the latter). See docs/demo.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
NS="${DEMO_NAMESPACE:-demo-edu}"
TAIL_SECONDS="${DEMO_TAIL_SECONDS:-780}"
OUT="${DEMO_OUT:-docs/demo}"
MODULES=(video-call real-time-messaging)
# Live sessions one replica carries at the HPA's sessions target: the tier's
# sessionsPerReplica × targetPercent (examples/profiles: video-call hd 40 at
# 80 %, real-time-messaging 5000 at 80 %).
declare -A AT_TARGET=([video-call]=32 [real-time-messaging]=4000)
# Each pod's CPU, steady and under both CPU targets: sessions drive the HPA.
declare -A POD_CPU=([video-call]=200m [real-time-messaging]=50m)
METRIC=rtc_sessions_active

log() { printf '[demo] %s\n' "$*" >&2; }

# A compressed day: the HPA controller syncs every 5 s (the cluster's
# default is upstream's 15 s) when this script starts the cluster.
TCO_HPA_SYNC_PERIOD="${TCO_HPA_SYNC_PERIOD:-5s}" hack/cluster.sh up
eval "$(hack/cluster.sh env)"

log "building the operator (release) and the chart renderer"
cargo build --locked --release --quiet
cargo build --locked --release --quiet --manifest-path hack/plot/Cargo.toml --target-dir target/plot
BIN="${ROOT}/target/release/tenant-capacity-operator"
PLOT="${ROOT}/target/plot/release/tco-demo-plot"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tco-demo.XXXXXX")"
OPERATOR=""
WRITER=""
cleanup() {
  if [[ -n "${WRITER}" ]]; then
    kill "${WRITER}" 2>/dev/null || true
    wait "${WRITER}" 2>/dev/null || true
    WRITER=""
  fi
  if [[ -n "${OPERATOR}" ]]; then
    kill "${OPERATOR}" 2>/dev/null || true
    wait "${OPERATOR}" 2>/dev/null || true
    OPERATOR=""
    log "operator stopped (its log: ${WORK}/operator.log)"
  fi
}
trap cleanup EXIT

log "installing the CRDs and the example catalogue (profiles, plans)"
"${BIN}" crd | kubectl apply --server-side --force-conflicts -f - >/dev/null
for crd in moduleprofiles tenantsubscriptions subscriptionplans capacitycalendars; do
  kubectl wait --for condition=established --timeout=60s "crd/${crd}.capacity.tenancy.dev" >/dev/null
done
kubectl apply --server-side -f examples/profiles -f examples/plans >/dev/null

# A fresh start: the previous run's subscription and its children go first.
# The HPA controller keeps each HPA's recent recommendations (its 5-minute
# scale-down memory) by namespace/name and forgets them only when it next
# finds the HPA gone (it looks every 5 s): an HPA re-created with the same
# name sooner would inherit the last run's history. So give it 15 s.
if kubectl get namespace "${NS}" >/dev/null 2>&1; then
  kubectl delete tsub --all -n "${NS}" --wait=true >/dev/null
  for kind in hpa deployment pod; do
    kubectl wait --for=delete "${kind}" -l capacity.tenancy.dev/subscription=edu -n "${NS}" --timeout=120s >/dev/null 2>&1 || true
  done
  sleep 15
fi

log "starting the operator for namespace ${NS} (log: ${WORK}/operator.log)"
"${BIN}" run --metrics-bind-address 127.0.0.1:0 --metrics-secure=false --health-probe-bind-address 127.0.0.1:0 --namespace "${NS}" \
  >"${WORK}/operator.log" 2>&1 &
OPERATOR=$!

# ---------------------------------------------------------------------------
# The day, in minutes from now (windows are HH:MM, so they start on full minutes):
#   M0 (the first full minute at least 40 s away)  weekday-evening window [M0, M0+2m): video floor 40 %
#   M0 + 1m                                        holiday window [M0+1m, M0+4m): ceiling 200 %, floor 50 %
now=$(date -u +%s)
M0=$(((now + 40 + 59) / 60 * 60))
EVENING_START=$M0
EVENING_END=$((M0 + 120))
HOLIDAY_START=$((M0 + 60))
HOLIDAY_END=$((M0 + 240))
hhmm() { date -u -d "@$1" +%H:%M; }
sed -e "s/@NAMESPACE@/${NS}/g" \
  -e "s/@EVENING_DAY@/$(date -u -d "@${EVENING_START}" +%a)/" \
  -e "s/@EVENING_START@/$(hhmm "${EVENING_START}")/" -e "s/@EVENING_END@/$(hhmm "${EVENING_END}")/" \
  -e "s/@HOLIDAY_DATE@/$(date -u -d "@${HOLIDAY_START}" +%F)/g" \
  -e "s/@HOLIDAY_START@/$(hhmm "${HOLIDAY_START}")/" -e "s/@HOLIDAY_END@/$(hhmm "${HOLIDAY_END}")/" \
  hack/demo/subscription.yaml >"${WORK}/subscription.yaml"
log "windows (UTC): weekday-evening $(hhmm "${EVENING_START}")–$(hhmm "${EVENING_END}"), holiday $(hhmm "${HOLIDAY_START}")–$(hhmm "${HOLIDAY_END}")"
kubectl apply --server-side -f "${WORK}/subscription.yaml" >/dev/null
kubectl wait --for=condition=Ready --timeout=120s tsub/edu -n "${NS}" >/dev/null \
  || { log "the subscription did not become Ready:"; kubectl get tsub edu -n "${NS}" -o yaml >&2; tail -20 "${WORK}/operator.log" >&2; exit 1; }
kubectl get tsub edu -n "${NS}" -o wide

# Demand is live sessions per module, spread evenly over its running pods, as
# a load balancer would: more replicas, fewer sessions each. Seconds from M0.
phase_at() { # t (seconds from M0) -> "phase video-demand messaging-demand"
  local t=$1
  if ((t < 0)); then echo "quiet-morning 20 3000"
  elif ((t < 20)); then echo "evening-floor-up 20 3000"       # floor rises before the load
  elif ((t < 60)); then echo "after-school 110 9000"
  elif ((t < 80)); then echo "holiday-floor-up 110 9000"      # holiday: ceiling ×2, floor 50 %
  elif ((t < 120)); then echo "holiday-rising 250 20000"
  elif ((t < 240)); then echo "holiday-peak 520 42000"        # more than the holiday ceiling
  elif ((t < 480)); then echo "holiday-over 330 26000"        # still busy: the ceiling ramps down
  else echo "evening-quiet 60 6000"                           # the load falls
  fi
}

for m in "${MODULES[@]}"; do echo 0 >"${WORK}/demand-${m}"; echo 0 >"${WORK}/load-${m}"; done

# The session writer: every 2 s, give each running pod its share of the
# demand in the custom metrics API (the real HPA reads it there), and each new
# pod its steady CPU (kwok's usage annotation, read by metrics-server).
write_sessions() { # namespace pod value
  curl -sS --max-time 3 -o /dev/null -X POST -H 'Content-Type: application/json' -d "\"$3\"" \
    "${TCO_CUSTOM_METRICS_WRITE_URL}/write-metrics/namespaces/$1/pods/$2/${METRIC}" || true
}
writer_loop() {
  while true; do
    for m in "${MODULES[@]}"; do
      demand=$(cat "${WORK}/demand-${m}")
      mapfile -t pods < <(kubectl get pods -n "${NS}" -l "capacity.tenancy.dev/subscription=edu,capacity.tenancy.dev/module=${m}" \
        -o jsonpath='{range .items[?(@.status.phase=="Running")]}{.metadata.name} {.metadata.deletionTimestamp} {.metadata.annotations.kwok\.x-k8s\.io/usage-cpu}{"\n"}{end}' 2>/dev/null \
        | awk 'NF == 1 || (NF == 2 && $2 ~ /m$/) {print}')
      n=${#pods[@]}
      ((n > 0)) || continue
      echo "$(((demand + n - 1) / n))" >"${WORK}/load-${m}"
      fresh=()
      i=0
      for p in "${pods[@]}"; do
        read -r name cpu <<<"${p}"
        # Equal shares, the remainder one each to the first pods.
        write_sessions "${NS}" "${name}" $((demand / n + (i < demand % n ? 1 : 0)))
        i=$((i + 1))
        [[ -n "${cpu:-}" ]] || fresh+=("${name}")
      done
      if ((${#fresh[@]} > 0)); then
        kubectl annotate --overwrite pods -n "${NS}" "${fresh[@]}" "kwok.x-k8s.io/usage-cpu=${POD_CPU[$m]}" >/dev/null 2>&1 || true
      fi
    done
    sleep 2
  done
}
writer_loop &
WRITER=$!

mkdir -p "${OUT}"
CSV="${OUT}/timeline.csv"
echo "t_s,phase,module,demand_sessions,demand_replicas,sessions_per_pod,hpa_sessions_avg,hpa_desired,replicas,ready,ceiling,floor,quota_pods_hard,quota_pods_used,capacity_limited,ramping_down,ramping_to,active_windows" >"${CSV}"

T0=$(date -u +%s)
log "sampling every 5 s into ${CSV}; the evening window starts in $((M0 - T0)) s"
printf '%5s %-17s %-20s %6s %8s %7s %7s %7s %5s %5s %6s %s\n' t phase module demand sess/pod hpa-avg desired ready floor ceil quota limited/ramp >&2
last_phase=""
settled_since=""
while true; do
  now=$(date -u +%s)
  t=$((now - T0))
  read -r phase d_video d_im <<<"$(phase_at $((now - M0)))"
  echo "${d_video}" >"${WORK}/demand-video-call"
  echo "${d_im}" >"${WORK}/demand-real-time-messaging"
  if [[ "${phase}" != "${last_phase}" ]]; then
    log "t=${t}s: ${phase} (live sessions: video ${d_video}, messaging ${d_im})"
    last_phase="${phase}"
  fi

  hpas=$(kubectl get hpa -n "${NS}" -o jsonpath='{range .items[*]}{.metadata.labels.capacity\.tenancy\.dev/module} {.spec.minReplicas} {.spec.maxReplicas} {.status.desiredReplicas} {.status.currentMetrics[0].pods.current.averageValue}{"\n"}{end}')
  deps=$(kubectl get deploy -n "${NS}" -o jsonpath='{range .items[*]}{.metadata.labels.capacity\.tenancy\.dev/module} {.status.replicas} {.status.readyReplicas}{"\n"}{end}')
  quota=$(kubectl get resourcequota edu-capacity -n "${NS}" -o jsonpath='{.status.hard.pods} {.status.used.pods}')
  limited_status=$(kubectl get tsub edu -n "${NS}" -o jsonpath='{.status.conditions[?(@.type=="CapacityLimited")].status}')
  limited_msg=$(kubectl get tsub edu -n "${NS}" -o jsonpath='{.status.conditions[?(@.type=="CapacityLimited")].message}')
  windows=$(kubectl get tsub edu -n "${NS}" -o jsonpath='{.status.activeWindows[*]}' | tr ' ' ';')
  ramps=$(kubectl get tsub edu -n "${NS}" -o jsonpath='{range .status.modules[*]}{.name} {.rampingDown.toMaxReplicas}{"\n"}{end}')
  ramp_msg=$(kubectl get tsub edu -n "${NS}" -o jsonpath='{.status.conditions[?(@.reason=="RampingDown")].message}')
  read -r q_hard q_used <<<"${quota}"

  settled=1
  for m in "${MODULES[@]}"; do
    demand=$(cat "${WORK}/demand-${m}")
    load=$(cat "${WORK}/load-${m}")
    read -r _ floor ceiling desired avg <<<"$(grep "^${m} " <<<"${hpas}" || true)"
    read -r _ ramp_to <<<"$(grep "^${m} " <<<"${ramps}" || true)"
    ramping=0
    [[ -n "${ramp_to:-}" ]] && ramping=1
    read -r _ replicas ready <<<"$(grep "^${m} " <<<"${deps}" || true)"
    limited=0
    [[ "${limited_status}" == "True" && "${limited_msg}" == *"${m}: "* ]] && limited=1
    need=$(((demand + AT_TARGET[$m] - 1) / AT_TARGET[$m]))
    want=$((need > ${floor:-1} ? need : ${floor:-1}))
    want=$((want < ${ceiling:-1} ? want : ${ceiling:-1}))
    [[ "${replicas:-0}" == "${want}" ]] || settled=0
    demand_replicas=$(awk -v d="${demand}" -v c="${AT_TARGET[$m]}" 'BEGIN {printf "%.2f", d / c}')
    echo "${t},${phase},${m},${demand},${demand_replicas},${load},${avg:-},${desired:-},${replicas:-0},${ready:-0},${ceiling:-},${floor:-},${q_hard:-},${q_used:-},${limited},${ramping},${ramp_to:-},${windows}" >>"${CSV}"
    printf '%5s %-17s %-20s %6s %8s %7s %7s %7s %5s %5s %6s %s\n' "${t}" "${phase}" "${m}" "${demand}" "${load}" "${avg:--}" "${desired:--}" "${ready:-0}/${replicas:-0}" "${floor:--}" "${ceiling:--}" "${q_used:-}/${q_hard:-}" "${limited}/${ramping}" >&2
  done
  [[ "${limited_status}" == "True" ]] && log "CapacityLimited: ${limited_msg}"
  [[ -n "${ramp_msg}" ]] && log "Reconciling RampingDown: ${ramp_msg}"

  # After the holiday and the quiet evening's first minutes: stop once every
  # module runs what its demand needs (the ceiling ramps down a pod a minute,
  # the HPA's scale-down waits 5 minutes), or after the tail.
  if ((now >= M0 + 480 + 20)); then
    if ((settled)); then settled_since=${settled_since:-${now}}; else settled_since=""; fi
    if [[ -n "${settled_since}" ]] && ((now - settled_since >= 15)); then
      log "settled: every module at the replicas its demand needs"
      break
    fi
    if ((now >= HOLIDAY_END + TAIL_SECONDS)); then
      log "end of the tail (DEMO_TAIL_SECONDS=${TAIL_SECONDS})"
      break
    fi
  fi
  sleep $((5 - ($(date -u +%s) - now) % 5))
done

cleanup
"${PLOT}" "${CSV}" "${OUT}/timeline.svg"
log "timeline: ${CSV}, chart: ${OUT}/timeline.svg"
kubectl get tsub edu -n "${NS}" -o wide
