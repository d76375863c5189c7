#!/usr/bin/env bash
# The main job: a local control plane, the operator, and the example
# subscriptions reconciled.
#
#   hack/run.sh            bring everything up, show the result, then follow the
#                          operator's logs until Ctrl-C (the cluster stays up)
#   hack/run.sh --once     bring everything up, show the result, stop the operator
#
# Afterwards: eval "$(hack/cluster.sh env)"; kubectl get tsub -A; hack/cluster.sh down
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
FOLLOW=1
[[ "${1:-}" == "--once" ]] && FOLLOW=0

log() { printf '[run] %s\n' "$*" >&2; }

hack/prerequisites.sh
hack/cluster.sh up
eval "$(hack/cluster.sh env)"
STATE="${TCO_CLUSTER_DIR:-${HOME}/.local/state/tenant-capacity-operator/cluster}"

log "building the operator"
cargo build --locked --release --quiet
BIN="${ROOT}/target/release/tenant-capacity-operator"

log "installing the CRDs and the example catalogue (profiles, plans, calendars)"
"${BIN}" crd | kubectl apply --server-side -f - >/dev/null
for crd in moduleprofiles tenantsubscriptions subscriptionplans capacitycalendars; do
  kubectl wait --for condition=established --timeout=60s "crd/${crd}.capacity.tenancy.dev" >/dev/null
done
kubectl apply --server-side -f examples/profiles -f examples/plans -f examples/calendars

log "starting the operator (log: ${STATE}/logs/operator.log)"
mkdir -p "${STATE}/logs"
# Plain-HTTP /metrics, on the loopback address only (development).
"${BIN}" run --metrics-bind-address 127.0.0.1:18080 --metrics-secure=false --health-probe-bind-address 127.0.0.1:18081 \
  >"${STATE}/logs/operator.log" 2>&1 &
OPERATOR=$!
stop_operator() { kill "${OPERATOR}" 2>/dev/null && wait "${OPERATOR}" 2>/dev/null || true; }
trap stop_operator EXIT

for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:18081/readyz >/dev/null 2>&1 && break
  kill -0 "${OPERATOR}" 2>/dev/null || { tail -40 "${STATE}/logs/operator.log" >&2; exit 1; }
  sleep 0.2
done

log "applying the example subscriptions"
kubectl apply --server-side -f examples/subscriptions
for f in examples/subscriptions/*.yaml; do
  ns="$(awk '/^kind: Namespace/{n=1} n && /name:/{print $2; exit}' "${f}")"
  kubectl wait --for=condition=Ready --timeout=180s tsub --all -n "${ns}" >/dev/null \
    || { log "not Ready in ${ns}:"; kubectl get tsub -n "${ns}" -o yaml | sed -n '/^status:/,$p' >&2; exit 1; }
done

echo
kubectl get tsub -A -o wide
echo
# The binary is also the kubectl plugin `kubectl capacity`, under that name.
mkdir -p "${STATE}/bin"
ln -sf "${BIN}" "${STATE}/bin/kubectl-capacity"
PATH="${STATE}/bin:${PATH}" kubectl capacity status -A -o wide
echo
kubectl get deploy,hpa,svc,resourcequota -A -l app.kubernetes.io/managed-by=tenant-capacity-operator
echo
log "every example subscription is Ready. Metrics: curl http://127.0.0.1:18080/metrics"
log "kubectl plugin: ln -s ${BIN} ~/.local/bin/kubectl-capacity (or put ${STATE}/bin on PATH); then kubectl capacity status -n tenant-edu edu"

if ((FOLLOW)); then
  log "following the operator log; Ctrl-C stops the operator (the cluster stays up: hack/cluster.sh down)"
  tail -n +1 -f "${STATE}/logs/operator.log" &
  TAIL=$!
  trap 'kill ${TAIL} 2>/dev/null; stop_operator' EXIT
  wait "${OPERATOR}"
fi
