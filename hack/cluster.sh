#!/usr/bin/env bash
# A real local Kubernetes control plane built from pinned upstream Go modules:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (fake
# nodes), metrics-server, a custom metrics API and helm. Everything listens
# on 127.0.0.1 only, but for the custom metrics adapter's write port (below).
#
#   hack/cluster.sh build   build (or reuse) the pinned binaries and test tools
#   hack/cluster.sh build-tools   only the test tools (prometheus, promtool,
#                           hack/tools helpers), each cached on its own version
#   hack/cluster.sh up      start the cluster and wait until it is usable
#   hack/cluster.sh env     print exports for KUBECONFIG and PATH
#   hack/cluster.sh status  say whether the cluster is up
#   hack/cluster.sh down    stop what `up` started and remove its state
#   hack/cluster.sh logs [component]   list the logs, or print one
#   hack/cluster.sh stop-component NAME / start-component NAME
#                           fault injection: stop or restart one component
#
# Environment:
#   TCO_CACHE       build cache root   (default ~/.cache/tenant-capacity-operator)
#   TCO_CLUSTER_DIR runtime state/logs (default ~/.local/state/tenant-capacity-operator/cluster)
#   TCO_NODES       number of fake nodes (default 6: one per zone)
#   TCO_REGIONS     regions of the fake nodes (default "eu-west-1 us-east-1"),
#                   three zones each (<region>a, <region>b, <region>c)
#   TCO_API_PORT    kube-apiserver secure port (default 16443)
#   TCO_ETCD_PORT, TCO_ETCD_PEER_PORT, TCO_KCM_PORT, TCO_SCHEDULER_PORT,
#   TCO_KWOK_PORT, TCO_METRICS_SERVER_PORT, TCO_CUSTOM_METRICS_PORT
#                   the other ports (see below)
#   TCO_NODE_CPU, TCO_NODE_MEMORY, TCO_NODE_PODS   allocatable of each fake node
#   TCO_KCM_QPS     the controller manager's API rate limit (default 100/s)
#   TCO_HPA_SYNC_PERIOD  how often the HPA controller syncs each HPA (default
#                   15s, upstream's; hack/test.sh starts its clusters with
#                   5s so HPA-driven tests react quickly). Each sync is a
#                   scale read, a metrics API call and often an HPA status
#                   write: at thousands of HPAs a shorter period is a large
#                   share of the API server's load
#   TCO_APISERVER_GOGC  the Go garbage collector's target for kube-apiserver
#                   (default 100, Go's): higher trades memory for CPU
#
# The fake nodes carry no taint (there is no real node to keep pods off), and
# the labels of a cloud's nodes: topology.kubernetes.io/region and
# topology.kubernetes.io/zone, node i in the i-th zone round-robin over the
# regions' zones. Pods schedule there as they would on a real cluster. A
# pod's CPU/memory use, as metrics-server
# and `kubectl top` see it, comes from its annotations
# kwok.x-k8s.io/usage-cpu (e.g. "800m") and kwok.x-k8s.io/usage-memory.
#
# The custom metrics API (custom.metrics.k8s.io/v1beta2, what an HPA's `Pods`
# metrics read) is served by upstream's test adapter from custom-metrics-
# apiserver: it serves the values written to it, per object, with
#   curl -X POST -H 'Content-Type: application/json' -d '"37"' \
#     "$TCO_CUSTOM_METRICS_WRITE_URL/write-metrics/namespaces/NS/pods/POD/rtc_sessions_active"
# (`hack/cluster.sh env` exports the URL). The adapter opens that write port
# itself, on :8080 of every interface; it is not configurable upstream, so
# `up` refuses to start when 8080 is taken.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${HACK_DIR}/versions.env"

CACHE_ROOT="${TCO_CACHE:-${HOME}/.cache/tenant-capacity-operator}"
GO_VERSION="$(go env GOVERSION 2>/dev/null || echo nogo)"
CACHE_KEY="$( (sed '/^# TOOLS-BEGIN/,$d' "${HACK_DIR}/versions.env"; echo "${GO_VERSION}"; sed -n '/^# BUILD-RECIPE-BEGIN/,/^# BUILD-RECIPE-END/p' "${BASH_SOURCE[0]}") | sha256sum | cut -c1-12)"
BUILD_DIR="${CACHE_ROOT}/controlplane-${K8S_VERSION}-${CACHE_KEY}"
BIN_DIR="${BUILD_DIR}/bin"
STATE_DIR="${TCO_CLUSTER_DIR:-${HOME}/.local/state/tenant-capacity-operator/cluster}"
API_PORT="${TCO_API_PORT:-16443}"
NODES="${TCO_NODES:-6}"
REGIONS="${TCO_REGIONS:-eu-west-1 us-east-1}"
# All in 16xxx, away from the upstream defaults (2379, 6443, 10250-10259, 4443)
# and below the Linux ephemeral range.
ETCD_CLIENT_PORT="${TCO_ETCD_PORT:-16379}"
ETCD_PEER_PORT="${TCO_ETCD_PEER_PORT:-16380}"
KCM_PORT="${TCO_KCM_PORT:-16257}"
SCHED_PORT="${TCO_SCHEDULER_PORT:-16259}"
KWOK_PORT="${TCO_KWOK_PORT:-16250}"
METRICS_SERVER_PORT="${TCO_METRICS_SERVER_PORT:-16444}"
CUSTOM_METRICS_PORT="${TCO_CUSTOM_METRICS_PORT:-16445}"
# Fixed by the test adapter (its main listens on ":8080").
CUSTOM_METRICS_WRITE_PORT=8080

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok metrics-server custom-metrics-adapter helm)

# BUILD-RECIPE-BEGIN
go_env() {
  export GOMODCACHE="${BUILD_DIR}/gomod" GOCACHE="${BUILD_DIR}/gocache"
  export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local
  export GONOSUMDB="" GOPRIVATE=""
}

# A throwaway module that requires $1@$2, so `go build` resolves the upstream
# module's dependencies exactly as its own go.mod pins them.
wrapper() {
  local dir="$1" mod="$2" ver="$3"
  mkdir -p "${dir}"
  if [[ ! -f "${dir}/go.mod" ]]; then
    (cd "${dir}" && go mod init "tco.local/$(basename "${dir}")" >/dev/null 2>&1 \
      && go mod edit -require="${mod}@${ver}")
  fi
}

build_kubernetes() {
  local dir="${BUILD_DIR}/src/kubernetes"
  wrapper "${dir}" k8s.io/kubernetes "${K8S_VERSION}"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces
  # them with local folders; as a dependency those replaces do not apply, so
  # point each one at the published release of the same Kubernetes version.
  local gomod
  gomod="$(cd "${dir}" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [[ -f "${gomod}" ]] || die "could not download k8s.io/kubernetes@${K8S_VERSION}"
  local staging
  staging="$(grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0(\s|$)' "${gomod}" | awk '{print $1}' | sort -u)"
  local args=()
  for m in ${staging}; do args+=("-replace=${m}=${m}@${K8S_STAGING_VERSION}"); done
  (cd "${dir}" && go mod edit "${args[@]}")
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
    ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z -X ${pkg}.gitCommit=${K8S_VERSION}"
  done
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  local pkgs=()
  for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${c}@${K8S_VERSION}"); done
  (cd "${dir}" && go get "${pkgs[@]}" >/dev/null)
  for c in "${cmds[@]}"; do
    [[ -x "${BIN_DIR}/${c}" ]] && continue
    log "building ${c} ${K8S_VERSION}"
    (cd "${dir}" && go build -trimpath -ldflags "${ldflags}" -o "${BIN_DIR}/${c}.tmp" "k8s.io/kubernetes/cmd/${c}")
    mv "${BIN_DIR}/${c}.tmp" "${BIN_DIR}/${c}"
  done
}

build_simple() { # name module version package [ldflags]
  local name="$1" mod="$2" ver="$3" pkg="$4" ldflags="${5:-}"
  [[ -x "${BIN_DIR}/${name}" ]] && return 0
  local dir="${BUILD_DIR}/src/${name}"
  wrapper "${dir}" "${mod}" "${ver}"
  log "building ${name} ${ver}"
  (cd "${dir}" && go get "${pkg}@${ver}" >/dev/null)
  (cd "${dir}" && go build -trimpath -ldflags "-s -w ${ldflags}" -o "${BIN_DIR}/${name}.tmp" "${pkg}")
  mv "${BIN_DIR}/${name}.tmp" "${BIN_DIR}/${name}"
}
# BUILD-RECIPE-END

built() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "${BIN_DIR}/${b}" ]] || return 1; done
  [[ -d "${BUILD_DIR}/kwok/stage" && -d "${BUILD_DIR}/kwok/metrics" ]]
}

cmd_build() {
  if built; then
    log "binaries cached in ${BIN_DIR}"
    return 0
  fi
  command -v go >/dev/null || die "go is required to build the control plane"
  local start=${SECONDS}
  mkdir -p "${BIN_DIR}"
  go_env
  build_simple etcd go.etcd.io/etcd/server/v3 "${ETCD_VERSION}" go.etcd.io/etcd/server/v3 \
    "-X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}"
  build_simple kwok sigs.k8s.io/kwok "${KWOK_VERSION}" sigs.k8s.io/kwok/cmd/kwok \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
  build_simple metrics-server sigs.k8s.io/metrics-server "${METRICS_SERVER_VERSION}" sigs.k8s.io/metrics-server/cmd/metrics-server \
    "-X sigs.k8s.io/metrics-server/pkg/version.gitVersion=${METRICS_SERVER_VERSION}"
  build_simple custom-metrics-adapter sigs.k8s.io/custom-metrics-apiserver "${CUSTOM_METRICS_APISERVER_VERSION}" \
    sigs.k8s.io/custom-metrics-apiserver/test-adapter
  build_simple helm helm.sh/helm/v3 "${HELM_VERSION}" helm.sh/helm/v3/cmd/helm \
    "-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  build_kubernetes
  # kwok's stage and metric definitions ship inside its module.
  local kwok_dir="${GOMODCACHE}/sigs.k8s.io/kwok@${KWOK_VERSION}"
  mkdir -p "${BUILD_DIR}/kwok"
  cp -r "${kwok_dir}/kustomize/stage" "${kwok_dir}/kustomize/metrics" "${BUILD_DIR}/kwok/"
  chmod -R u+w "${BUILD_DIR}/kwok"
  built || die "build finished but binaries are missing in ${BIN_DIR}"
  log "built ${#BINARIES[@]} binaries in $((SECONDS - start))s into ${BIN_DIR}"
}

# ---------------------------------------------------------------------------
# Tools of the tests (versions.env, below TOOLS-BEGIN): each in a folder of its
# own under ${TOOLS_ROOT}, keyed on its version, the Go version and its recipe
# (for hack/tools, on the helpers' own source), sharing one module cache.

TOOLS_ROOT="${CACHE_ROOT}/tools"
tool_key() { (cat; echo "${GO_VERSION}") | sha256sum | cut -c1-12; }
PROMETHEUS_DIR="${TOOLS_ROOT}/prometheus-${PROMETHEUS_VERSION}-$(
  { echo "${PROMETHEUS_VERSION}"; sed -n '/^# PROMETHEUS-RECIPE-BEGIN/,/^# PROMETHEUS-RECIPE-END/p' "${BASH_SOURCE[0]}"; } | tool_key)"
HELPERS_SRC="${HACK_DIR}/tools"
HELPERS_DIR="${TOOLS_ROOT}/helpers-$(
  if [[ -d "${HELPERS_SRC}" ]]; then
    cd "${HELPERS_SRC}" && find . -type f -not -name '*~' -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
  fi | tool_key)"

tools_env() {
  export GOMODCACHE="${TOOLS_ROOT}/gomod" GOCACHE="${TOOLS_ROOT}/gocache"
  export CGO_ENABLED=0 GOTOOLCHAIN=local GONOSUMDB="" GOPRIVATE=""
}

# PROMETHEUS-RECIPE-BEGIN
build_prometheus() {
  local bin="${PROMETHEUS_DIR}/bin" c
  [[ -x "${bin}/prometheus" && -x "${bin}/promtool" ]] && return 0
  local dir="${PROMETHEUS_DIR}/src" mod=github.com/prometheus/prometheus
  mkdir -p "${bin}" "${dir}"
  if [[ ! -f "${dir}/go.mod" ]]; then
    (cd "${dir}" && go mod init tco.local/prometheus >/dev/null 2>&1 && go mod edit -require="${mod}@${PROMETHEUS_VERSION}")
  fi
  # v0.3MM.P of the module is Prometheus 3.MM.P.
  local release="${PROMETHEUS_VERSION#v0.}"
  release="3.$((10#${release%%.*} - 300)).${release#*.}"
  local ldflags="-s -w -X github.com/prometheus/common/version.Version=${release}"
  ldflags+=" -X github.com/prometheus/common/version.Revision=${PROMETHEUS_VERSION}"
  (cd "${dir}" && GOFLAGS="-mod=mod -buildvcs=false" go get "${mod}/cmd/prometheus@${PROMETHEUS_VERSION}" "${mod}/cmd/promtool@${PROMETHEUS_VERSION}" >/dev/null)
  for c in prometheus promtool; do
    [[ -x "${bin}/${c}" ]] && continue
    log "building ${c} ${release} (${mod}@${PROMETHEUS_VERSION})"
    # remove_all_sd: no cloud service discovery (static targets are all the
    # tests scrape), which leaves out most of the module's dependencies.
    (cd "${dir}" && GOFLAGS="-mod=mod -buildvcs=false" go build -tags remove_all_sd -trimpath -ldflags "${ldflags}" -o "${bin}/${c}.tmp" "${mod}/cmd/${c}")
    mv "${bin}/${c}.tmp" "${bin}/${c}"
  done
}
# PROMETHEUS-RECIPE-END

# hack/tools: one Go module (go.mod and go.sum committed), one command per
# folder, installed as tco-<folder>; hack/tools/internal holds what they share.
build_helpers() {
  local bin="${HELPERS_DIR}/bin" d name
  [[ -f "${HELPERS_DIR}/built" ]] && return 0
  mkdir -p "${bin}"
  for d in "${HELPERS_SRC}"/*/; do
    name="$(basename "${d}")"
    [[ "${name}" == internal ]] && continue # packages the commands share
    log "building tco-${name} (hack/tools/${name})"
    (cd "${HELPERS_SRC}" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -ldflags "-s -w" -o "${bin}/tco-${name}" "./${name}")
  done
  touch "${HELPERS_DIR}/built"
}

cmd_build_tools() {
  command -v go >/dev/null || die "go is required to build the test tools"
  local start=${SECONDS}
  mkdir -p "${TOOLS_ROOT}"
  # One build at a time (the suite and a developer may both ask for them).
  exec 8>"${TOOLS_ROOT}/.lock"
  flock 8
  tools_env
  build_prometheus
  [[ -f "${HELPERS_SRC}/go.mod" ]] && build_helpers
  log "test tools in ${PROMETHEUS_DIR}/bin and ${HELPERS_DIR}/bin ($((SECONDS - start))s)"
}

# ---------------------------------------------------------------------------
# Running the cluster. Everything below is outside the build recipe: editing it
# does not invalidate the binary cache.

PKI_DIR="${STATE_DIR}/pki"
LOG_DIR="${STATE_DIR}/logs"
PID_DIR="${STATE_DIR}/pids"
KUBECONFIG_PATH="${STATE_DIR}/kubeconfig"
READY_MARK="${STATE_DIR}/ready"
LOCK_FILE="${STATE_DIR%/}.lock"
# Start order; `down` stops in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok metrics-server custom-metrics-adapter)
SERVICE_CIDR="10.96.0.0/16"
SERVICE_FIRST_IP="10.96.0.1"
POD_CIDR="10.244.0.1/16"
NODE_CPU="${TCO_NODE_CPU:-32}"
NODE_MEMORY="${TCO_NODE_MEMORY:-256Gi}"
NODE_PODS="${TCO_NODE_PODS:-250}"
# The controller manager's client rate limit (requests/s; burst is twice it).
KCM_QPS="${TCO_KCM_QPS:-100}"
HPA_SYNC_PERIOD="${TCO_HPA_SYNC_PERIOD:-15s}"
APISERVER_GOGC="${TCO_APISERVER_GOGC:-100}"
METRIC_RESOLUTION="10s"

kubectl_admin() { "${BIN_DIR}/kubectl" --kubeconfig "${KUBECONFIG_PATH}" --request-timeout=10s "$@"; }

take_lock() {
  mkdir -p "$(dirname "${LOCK_FILE}")"
  exec 9>"${LOCK_FILE}"
  if ! flock -n 9; then
    log "another 'hack/cluster.sh up/down' holds ${LOCK_FILE}; waiting (up to 20m)"
    flock -w 1200 9 || die "timed out waiting for ${LOCK_FILE}"
  fi
}

# --- processes ---------------------------------------------------------------

# pid of a recorded component if that process is still the one we started.
component_pid() {
  local f="${PID_DIR}/$1.pid" pid exe actual
  [[ -f "${f}" ]] || return 1
  read -r pid exe <"${f}" || return 1
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
  actual="$(readlink "/proc/${pid}/exe" 2>/dev/null)" || return 1
  # A rebuilt or removed binary shows up as "<path> (deleted)".
  [[ "${actual}" == "${exe}" || "${actual}" == "${exe} (deleted)" ]] || return 1
  echo "${pid}"
}

alive() { component_pid "$1" >/dev/null; }

start_component() { # name binary args...
  local name="$1" bin="${BIN_DIR}/$2"; shift 2
  # The Go runtime's settings the caller gave (GOGC), first, as env does.
  { [[ -z "${GOGC:-}" ]] || printf 'GOGC=%q ' "${GOGC}"; printf '%q ' "${bin}" "$@"; } >"${STATE_DIR}/${name}.cmdline"
  # setsid: the component gets its own session, so a Ctrl-C or the end of the
  # shell that ran `up` does not take the cluster down with it.
  # Close every other inherited descriptor (our lock, callers' pipes), so a
  # long-running component never holds them open.
  (
    for fd in /proc/"${BASHPID}"/fd/*; do
      fd="${fd##*/}"
      ((fd > 2)) && eval "exec ${fd}>&-" 2>/dev/null
    done
    exec setsid "${bin}" "$@" >>"${LOG_DIR}/${name}.log" 2>&1 </dev/null
  ) &
  local pid=$! i
  disown "${pid}" 2>/dev/null || true # no "Killed" job notices from bash
  echo "${pid} ${bin}" >"${PID_DIR}/${name}.pid"
  # Until the subshell has exec'd the binary, /proc/<pid>/exe is still bash.
  for ((i = 0; i < 100; i++)); do
    [[ "$(readlink "/proc/${pid}/exe" 2>/dev/null)" == "${bin}" ]] && break
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.05
  done
  log "started ${name} (pid ${pid}), log: ${LOG_DIR}/${name}.log"
}

# Stop every recorded process: TERM, then KILL after a timeout.
stop_components() {
  local i name pid pids=() names=()
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    name="${COMPONENTS[i]}"
    if pid="$(component_pid "${name}")"; then
      kill -TERM "${pid}" 2>/dev/null || true
      pids+=("${pid}"); names+=("${name}")
    fi
    rm -f "${PID_DIR}/${name}.pid"
  done
  ((${#pids[@]})) || return 0
  log "stopping ${names[*]}"
  local deadline=$((SECONDS + 20)) left
  while :; do
    left=()
    # (a zombie has no exe link any more: it has exited)
    for pid in "${pids[@]}"; do readlink "/proc/${pid}/exe" >/dev/null 2>&1 && left+=("${pid}"); done
    ((${#left[@]})) || break
    if ((SECONDS >= deadline)); then
      log "still running after 20s, sending KILL to pid(s) ${left[*]}"
      kill -KILL "${left[@]}" 2>/dev/null || true
      sleep 0.2
      break
    fi
    sleep 0.2
  done
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- failure handling --------------------------------------------------------

UP_IN_PROGRESS=0

fail_component() { # name reason
  local name="$1" reason="$2"
  printf '[cluster] ERROR: %s failed: %s\n' "${name}" "${reason}" >&2
  if [[ -f "${LOG_DIR}/${name}.log" ]]; then
    printf '[cluster] ---- last 40 lines of %s ----\n' "${LOG_DIR}/${name}.log" >&2
    tail -n 40 "${LOG_DIR}/${name}.log" >&2 || true
    printf '[cluster] ---- end of %s log ----\n' "${name}" >&2
  fi
  exit 1 # the EXIT trap of cmd_up stops what was started
}

on_up_exit() {
  local rc=$?
  if ((UP_IN_PROGRESS)); then
    log "up did not complete (exit ${rc}); stopping what was started (logs kept in ${LOG_DIR})"
    stop_components
    rm -f "${READY_MARK}"
    ((rc != 0)) || rc=1
  fi
  exit "${rc}"
}

# Fail fast when a started component has died.
check_alive() {
  local name
  for name in "${COMPONENTS[@]}"; do
    [[ -f "${PID_DIR}/${name}.pid" ]] || continue
    alive "${name}" || fail_component "${name}" "process exited"
  done
}

# wait_for <component blamed on timeout> <timeout seconds> <description> <command...>
wait_for() {
  local name="$1" timeout="$2" what="$3"; shift 3
  local start=${SECONDS} deadline=$((SECONDS + timeout)) delay=0.1
  while :; do
    check_alive
    if "$@" >/dev/null 2>&1; then
      log "${what}: ok after $((SECONDS - start))s"
      return 0
    fi
    ((SECONDS < deadline)) || fail_component "${name}" "timed out after ${timeout}s waiting for: ${what}"
    sleep "${delay}"
    [[ "${delay}" == 0.1 ]] && delay=0.25 || delay=0.5
  done
}

# --- certificates and kubeconfigs -------------------------------------------

gen_ca() { # name CN
  openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 3650 \
    -keyout "${PKI_DIR}/$1.key" -out "${PKI_DIR}/$1.crt" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign,cRLSign" 2>/dev/null
}

gen_cert() { # name ca subject extendedKeyUsage [subjectAltName]
  local name="$1" ca="$2" subj="$3" eku="$4" san="${5:-}"
  openssl req -new -nodes -newkey rsa:2048 -keyout "${PKI_DIR}/${name}.key" \
    -out "${PKI_DIR}/${name}.csr" -subj "${subj}" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=${eku}"
    [[ -z "${san}" ]] || echo "subjectAltName=${san}"
  } >"${PKI_DIR}/${name}.ext"
  openssl x509 -req -sha256 -days 3650 -in "${PKI_DIR}/${name}.csr" \
    -CA "${PKI_DIR}/${ca}.crt" -CAkey "${PKI_DIR}/${ca}.key" -CAcreateserial \
    -extfile "${PKI_DIR}/${name}.ext" -out "${PKI_DIR}/${name}.crt" 2>/dev/null
  rm -f "${PKI_DIR}/${name}.csr" "${PKI_DIR}/${name}.ext"
}

write_kubeconfig() { # file user cert-name
  local file="$1" user="$2" cert="$3"
  cat >"${file}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tco-local
  cluster:
    server: https://127.0.0.1:${API_PORT}
    certificate-authority-data: $(base64 -w0 "${PKI_DIR}/ca.crt")
users:
- name: ${user}
  user:
    client-certificate-data: $(base64 -w0 "${PKI_DIR}/${cert}.crt")
    client-key-data: $(base64 -w0 "${PKI_DIR}/${cert}.key")
contexts:
- name: tco-local
  context:
    cluster: tco-local
    user: ${user}
    namespace: default
current-context: tco-local
EOF
  chmod 600 "${file}"
}

make_pki() {
  mkdir -p "${PKI_DIR}"
  chmod 700 "${PKI_DIR}"
  local serving_san="DNS:localhost,IP:127.0.0.1"
  gen_ca ca tco-local-ca
  gen_ca front-proxy-ca tco-local-front-proxy-ca
  gen_cert apiserver ca "/CN=kube-apiserver" serverAuth \
    "${serving_san},DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:${SERVICE_FIRST_IP}"
  # kwok's kubelet-style server and metrics-server; the aggregator checks the
  # latter as <service>.<namespace>.svc.
  gen_cert serving ca "/CN=tco-local-serving" serverAuth \
    "${serving_san},DNS:metrics-server.kube-system.svc,DNS:custom-metrics-adapter.kube-system.svc"
  gen_cert admin ca "/O=system:masters/CN=tco-admin" clientAuth
  gen_cert kube-controller-manager ca "/CN=system:kube-controller-manager" clientAuth
  gen_cert kube-scheduler ca "/CN=system:kube-scheduler" clientAuth
  gen_cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" clientAuth
  openssl genrsa -out "${PKI_DIR}/sa.key" 2048 2>/dev/null
  openssl rsa -in "${PKI_DIR}/sa.key" -pubout -out "${PKI_DIR}/sa.pub" 2>/dev/null
  write_kubeconfig "${KUBECONFIG_PATH}" tco-admin admin
  write_kubeconfig "${STATE_DIR}/kube-controller-manager.kubeconfig" system:kube-controller-manager kube-controller-manager
  write_kubeconfig "${STATE_DIR}/kube-scheduler.kubeconfig" system:kube-scheduler kube-scheduler
}

# kwok reads Stage, Metric and ClusterResourceUsage objects from its config.
# Every write (who, verb, resource, response code) goes to an audit log at
# Metadata level, so benchmarks and tests can count one client's writes.
make_audit_policy() {
  cat >"${STATE_DIR}/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  resources: [{group: coordination.k8s.io, resources: [leases]}]
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
EOF
}

make_kwok_config() {
  local k="${BUILD_DIR}/kwok" f first=1
  local files=(
    "${k}/stage/node/fast/node-initialize.yaml"
    "${k}/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml"
    "${k}/stage/pod/fast/pod-ready.yaml"
    "${k}/stage/pod/fast/pod-complete.yaml"
    "${k}/stage/pod/fast/pod-delete.yaml"
    "${k}/metrics/resource/metrics-resource.yaml"
    "${k}/metrics/usage/usage-from-annotation.yaml"
  )
  {
    for f in "${files[@]}"; do
      [[ -f "${f}" ]] || die "missing kwok definition ${f} (re-run: hack/cluster.sh build)"
      ((first)) || echo "---"
      first=0
      cat "${f}"
    done
  } >"${STATE_DIR}/kwok.yaml"
}

# --- readiness probes --------------------------------------------------------

api_curl() {
  curl -sS --max-time 5 --cacert "${PKI_DIR}/ca.crt" \
    --cert "${PKI_DIR}/admin.crt" --key "${PKI_DIR}/admin.key" "https://127.0.0.1:${API_PORT}$1"
}
etcd_healthy() { curl -sS --max-time 3 "http://127.0.0.1:${ETCD_CLIENT_PORT}/health" | grep -q '"health":"true"'; }
api_ready() { [[ "$(api_curl /readyz)" == ok ]]; }
healthz_ok() { [[ "$(curl -sSk --max-time 3 "https://127.0.0.1:$1/healthz")" == ok ]]; }

nodes_ready() {
  local want="$1" ready
  ready="$(kubectl_admin get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')"
  [[ "${ready}" -ge "${want}" ]]
}
# The node lifecycle controller removes node.kubernetes.io/not-ready once a
# node is Ready; until then nothing is scheduled there.
nodes_untainted() {
  ! kubectl_admin get nodes -l type=kwok -o jsonpath='{.items[*].spec.taints[*].key}' | tr ' ' '\n' | grep -q '^node\.kubernetes\.io/'
}
default_sa_exists() { kubectl_admin -n default get serviceaccount default; }
metrics_api_available() {
  [[ "$(kubectl_admin get apiservice v1beta1.metrics.k8s.io -o jsonpath='{.status.conditions[?(@.type=="Available")].status}')" == True ]]
}
custom_metrics_api_available() {
  [[ "$(kubectl_admin get apiservice v1beta2.custom.metrics.k8s.io -o jsonpath='{.status.conditions[?(@.type=="Available")].status}')" == True ]]
}
custom_metrics_writable() {
  curl -sS --max-time 3 -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    -d '"0"' "http://127.0.0.1:${CUSTOM_METRICS_WRITE_PORT}/write-metrics/namespaces/kube-system/pods/tco-probe/tco_probe" \
    | grep -q '^2'
}
top_nodes_works() { [[ "$(kubectl_admin top nodes --no-headers | grep -c .)" -ge "${NODES}" ]]; }

# --- manifests ---------------------------------------------------------------

apply_nodes() {
  local i name zones=() region zone
  for region in ${REGIONS}; do
    for zone in a b c; do zones+=("${region} ${region}${zone}"); done
  done
  for ((i = 0; i < NODES; i++)); do
    name="kwok-node-${i}"
    read -r region zone <<<"${zones[i % ${#zones[@]}]}"
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: ${name}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
    # kwok serves each fake node's kubelet /metrics/resource under this path.
    metrics.k8s.io/resource-metrics-path: /metrics/nodes/${name}/metrics/resource
  labels:
    type: kwok
    kubernetes.io/hostname: ${name}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node-role.kubernetes.io/agent: ""
    topology.kubernetes.io/region: ${region}
    topology.kubernetes.io/zone: ${zone}
status:
  allocatable: {cpu: "${NODE_CPU}", memory: "${NODE_MEMORY}", pods: "${NODE_PODS}"}
  capacity: {cpu: "${NODE_CPU}", memory: "${NODE_MEMORY}", pods: "${NODE_PODS}"}
  nodeInfo: {architecture: amd64, operatingSystem: linux}
EOF
  done | kubectl_admin create -f - >/dev/null
}

# metrics-server drops a node whose reported CPU or memory use is zero, and a
# kwok node's use is the sum of its pods'. Like a real node's system pods, a
# small DaemonSet gives every fake node some use, so node metrics (kubectl top
# nodes) exist from the start.
apply_node_agent() {
  kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: tco-node-agent
  namespace: kube-system
  labels: {app.kubernetes.io/name: tco-node-agent}
spec:
  selector:
    matchLabels: {app.kubernetes.io/name: tco-node-agent}
  template:
    metadata:
      labels: {app.kubernetes.io/name: tco-node-agent}
      annotations:
        kwok.x-k8s.io/usage-cpu: 20m
        kwok.x-k8s.io/usage-memory: 64Mi
    spec:
      priorityClassName: system-node-critical
      nodeSelector: {type: kwok}
      containers:
      - name: agent
        image: registry.invalid/tco-node-agent:0
        resources:
          requests: {cpu: 10m, memory: 32Mi}
EOF
}

# metrics-server and the custom metrics adapter run as local processes: an
# ExternalName Service points the aggregator at 127.0.0.1:<port>, and the
# APIService trusts our CA.
apply_apiservice() { # service group version port priority
  local service="$1" group="$2" version="$3" port="$4" priority="$5"
  kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata:
  name: ${service}
  namespace: kube-system
spec:
  type: ExternalName
  externalName: 127.0.0.1
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: ${version}.${group}
spec:
  group: ${group}
  version: ${version}
  groupPriorityMinimum: 100
  versionPriority: ${priority}
  service:
    name: ${service}
    namespace: kube-system
    port: ${port}
  caBundle: $(base64 -w0 "${PKI_DIR}/ca.crt")
EOF
}
apply_metrics_apiservice() {
  apply_apiservice metrics-server metrics.k8s.io v1beta1 "${METRICS_SERVER_PORT}" 100
}
# v1beta2 is what the HPA controller asks the custom metrics API for first.
apply_custom_metrics_apiservice() {
  apply_apiservice custom-metrics-adapter custom.metrics.k8s.io v1beta2 "${CUSTOM_METRICS_PORT}" 200
}

# --- subcommands -------------------------------------------------------------

cluster_is_up() {
  [[ -f "${READY_MARK}" ]] || return 1
  local name
  for name in "${COMPONENTS[@]}"; do alive "${name}" || return 1; done
  api_ready
}

cmd_up() {
  take_lock
  cmd_build
  if cluster_is_up; then
    log "already up (KUBECONFIG=${KUBECONFIG_PATH})"
    return 0
  fi
  if [[ -e "${STATE_DIR}" ]]; then
    log "found stale state in ${STATE_DIR}; cleaning it up"
    stop_components
    rm -rf "${STATE_DIR}"
  fi
  command -v openssl >/dev/null || die "openssl is required"
  command -v curl >/dev/null || die "curl is required"
  [[ "${NODES}" =~ ^[1-9][0-9]*$ ]] || die "TCO_NODES must be a positive number, got '${NODES}'"
  [[ "${REGIONS}" =~ ^[a-z0-9-]+( [a-z0-9-]+)*$ ]] || die "TCO_REGIONS must be region names separated by spaces, got '${REGIONS}'"
  local port busy=()
  for port in "${ETCD_CLIENT_PORT}" "${ETCD_PEER_PORT}" "${API_PORT}" "${KCM_PORT}" "${SCHED_PORT}" "${KWOK_PORT}" "${METRICS_SERVER_PORT}" "${CUSTOM_METRICS_PORT}" "${CUSTOM_METRICS_WRITE_PORT}"; do
    port_in_use "${port}" && busy+=("${port}")
  done
  ((${#busy[@]} == 0)) || die "port(s) ${busy[*]} on 127.0.0.1 already in use (see the TCO_*_PORT variables in $0)"

  local start=${SECONDS}
  UP_IN_PROGRESS=1
  trap on_up_exit EXIT
  trap 'exit 130' INT TERM
  mkdir -p "${STATE_DIR}" "${LOG_DIR}" "${PID_DIR}"
  log "state and logs in ${STATE_DIR}"
  make_pki
  make_kwok_config
  make_audit_policy

  start_component etcd etcd \
    --name=tco-local \
    --data-dir="${STATE_DIR}/etcd" \
    --listen-client-urls="http://127.0.0.1:${ETCD_CLIENT_PORT}" \
    --advertise-client-urls="http://127.0.0.1:${ETCD_CLIENT_PORT}" \
    --listen-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-advertise-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-cluster="tco-local=http://127.0.0.1:${ETCD_PEER_PORT}" \
    --unsafe-no-fsync \
    --quota-backend-bytes=4294967296 \
    --auto-compaction-mode=periodic --auto-compaction-retention=5m \
    --log-level=warn
  wait_for etcd 30 "etcd /health" etcd_healthy

  GOGC="${APISERVER_GOGC}" start_component kube-apiserver kube-apiserver \
    --etcd-servers="http://127.0.0.1:${ETCD_CLIENT_PORT}" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="${API_PORT}" \
    --cert-dir="${PKI_DIR}" \
    --tls-cert-file="${PKI_DIR}/apiserver.crt" \
    --tls-private-key-file="${PKI_DIR}/apiserver.key" \
    --client-ca-file="${PKI_DIR}/ca.crt" \
    --authorization-mode=Node,RBAC \
    --allow-privileged=true \
    --service-cluster-ip-range="${SERVICE_CIDR}" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="${PKI_DIR}/sa.pub" \
    --service-account-signing-key-file="${PKI_DIR}/sa.key" \
    --endpoint-reconciler-type=none \
    --kubelet-client-certificate="${PKI_DIR}/admin.crt" \
    --kubelet-client-key="${PKI_DIR}/admin.key" \
    --kubelet-preferred-address-types=InternalIP \
    --proxy-client-cert-file="${PKI_DIR}/front-proxy-client.crt" \
    --proxy-client-key-file="${PKI_DIR}/front-proxy-client.key" \
    --requestheader-client-ca-file="${PKI_DIR}/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --enable-aggregator-routing=false \
    --audit-policy-file="${STATE_DIR}/audit-policy.yaml" \
    --audit-log-path="${LOG_DIR}/audit.log" \
    --audit-log-format=json \
    --audit-log-maxsize=2048 --audit-log-maxbackup=1
  wait_for kube-apiserver 120 "kube-apiserver /readyz" api_ready

  start_component kube-controller-manager kube-controller-manager \
    --kubeconfig="${STATE_DIR}/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="${STATE_DIR}/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="${STATE_DIR}/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="${KCM_PORT}" \
    --leader-elect=false \
    --controllers='*' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="${PKI_DIR}/sa.key" \
    --root-ca-file="${PKI_DIR}/ca.crt" \
    --cluster-signing-cert-file="${PKI_DIR}/ca.crt" \
    --cluster-signing-key-file="${PKI_DIR}/ca.key" \
    --service-cluster-ip-range="${SERVICE_CIDR}" \
    --horizontal-pod-autoscaler-sync-period="${HPA_SYNC_PERIOD}" \
    --kube-api-qps="${KCM_QPS}" --kube-api-burst="$((2 * KCM_QPS))" \
    --concurrent-namespace-syncs=20

  start_component kube-scheduler kube-scheduler \
    --kubeconfig="${STATE_DIR}/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="${STATE_DIR}/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="${STATE_DIR}/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="${SCHED_PORT}" \
    --leader-elect=false

  start_component kwok kwok \
    --kubeconfig="${KUBECONFIG_PATH}" \
    --config="${STATE_DIR}/kwok.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip=127.0.0.1 \
    --node-port="${KWOK_PORT}" \
    --server-address="127.0.0.1:${KWOK_PORT}" \
    --tls-cert-file="${PKI_DIR}/serving.crt" \
    --tls-private-key-file="${PKI_DIR}/serving.key" \
    --cidr="${POD_CIDR}" \
    --node-lease-duration-seconds=40

  wait_for kube-controller-manager 60 "kube-controller-manager /healthz" healthz_ok "${KCM_PORT}"
  wait_for kube-scheduler 60 "kube-scheduler /healthz" healthz_ok "${SCHED_PORT}"
  wait_for kwok 60 "kwok /healthz" healthz_ok "${KWOK_PORT}"

  apply_nodes
  apply_node_agent
  apply_metrics_apiservice
  # metrics-server asks the API server (a SubjectAccessReview) whether the
  # caller may read each request's metrics, and remembers a yes for
  # --authorization-webhook-cache-authorized-ttl (upstream 10s). The HPA
  # controller reads each HPA's namespace once per sync, so at thousands
  # of HPAs synced every 15s every read was a fresh review: a request to
  # the API server per metrics read, on the same two cores. Five minutes
  # keeps a granted read cached across syncs (a revoked one is refused
  # within five minutes; refusals are still cached for 10s only).
  start_component metrics-server metrics-server \
    --kubeconfig="${KUBECONFIG_PATH}" \
    --authentication-kubeconfig="${KUBECONFIG_PATH}" \
    --authorization-kubeconfig="${KUBECONFIG_PATH}" \
    --bind-address=127.0.0.1 \
    --secure-port="${METRICS_SERVER_PORT}" \
    --tls-cert-file="${PKI_DIR}/serving.crt" \
    --tls-private-key-file="${PKI_DIR}/serving.key" \
    --kubelet-insecure-tls \
    --kubelet-preferred-address-types=InternalIP \
    --kubelet-use-node-status-port \
    --kubelet-request-timeout=5s \
    --metric-resolution="${METRIC_RESOLUTION}" \
    --authorization-webhook-cache-authorized-ttl=5m

  apply_custom_metrics_apiservice
  start_component custom-metrics-adapter custom-metrics-adapter \
    --lister-kubeconfig="${KUBECONFIG_PATH}" \
    --authentication-kubeconfig="${KUBECONFIG_PATH}" \
    --authorization-kubeconfig="${KUBECONFIG_PATH}" \
    --bind-address=127.0.0.1 \
    --secure-port="${CUSTOM_METRICS_PORT}" \
    --tls-cert-file="${PKI_DIR}/serving.crt" \
    --tls-private-key-file="${PKI_DIR}/serving.key"

  wait_for kwok 60 "${NODES} fake node(s) Ready" nodes_ready "${NODES}"
  wait_for kube-controller-manager 60 "nodes free of not-ready taints" nodes_untainted
  wait_for kube-controller-manager 60 "ServiceAccount default/default" default_sa_exists
  wait_for metrics-server 90 "APIService v1beta1.metrics.k8s.io Available" metrics_api_available
  wait_for metrics-server 90 "kubectl top nodes (all ${NODES} nodes)" top_nodes_works
  wait_for custom-metrics-adapter 60 "APIService v1beta2.custom.metrics.k8s.io Available" custom_metrics_api_available
  wait_for custom-metrics-adapter 30 "custom metrics write port :${CUSTOM_METRICS_WRITE_PORT}" custom_metrics_writable

  date -u +%FT%TZ >"${READY_MARK}"
  UP_IN_PROGRESS=0
  trap - EXIT INT TERM
  log "cluster up in $((SECONDS - start))s: https://127.0.0.1:${API_PORT}, ${NODES} fake node(s)"
  log "use it with: eval \"\$(hack/cluster.sh env)\"   (KUBECONFIG=${KUBECONFIG_PATH})"
}

cmd_down() {
  take_lock
  if [[ ! -e "${STATE_DIR}" ]]; then
    log "not up; nothing to do"
    return 0
  fi
  stop_components
  rm -rf "${STATE_DIR}"
  log "down; removed ${STATE_DIR}"
}

cmd_status() {
  if cluster_is_up; then
    echo "up: https://127.0.0.1:${API_PORT}, KUBECONFIG=${KUBECONFIG_PATH}"
    return 0
  fi
  if [[ ! -e "${STATE_DIR}" ]]; then
    echo "not up"
    return 1
  fi
  local name states=()
  for name in "${COMPONENTS[@]}"; do
    if alive "${name}"; then states+=("${name}=running"); else states+=("${name}=stopped"); fi
  done
  if [[ ! -f "${READY_MARK}" ]]; then
    echo "not up (starting, or a failed start; ${states[*]})"
  else
    echo "not up (unhealthy: ${states[*]}); try: hack/cluster.sh down && hack/cluster.sh up"
  fi
  return 1
}

cmd_env() {
  [[ -f "${KUBECONFIG_PATH}" ]] || log "warning: the cluster is not up; run hack/cluster.sh up"
  printf 'export KUBECONFIG=%q\n' "${KUBECONFIG_PATH}"
  # shellcheck disable=SC2016 # $PATH is expanded by the caller's eval
  printf 'export PATH=%q:%q:%q:"$PATH"\n' "${BIN_DIR}" "${PROMETHEUS_DIR}/bin" "${HELPERS_DIR}/bin"
  printf 'export TCO_CUSTOM_METRICS_WRITE_URL=%q\n' "http://127.0.0.1:${CUSTOM_METRICS_WRITE_PORT}"
}

cmd_logs() {
  if [[ $# -eq 0 ]]; then
    [[ -d "${LOG_DIR}" ]] || die "no logs: ${LOG_DIR} does not exist"
    local f
    for f in "${LOG_DIR}"/*.log; do
      [[ -e "${f}" ]] && printf '%-24s %s\n' "$(basename "${f}" .log)" "${f}"
    done
    return 0
  fi
  local f="${LOG_DIR}/$1.log"
  [[ -f "${f}" ]] || die "no log for '$1' (components: ${COMPONENTS[*]})"
  cat "${f}"
}

# Fault injection for tests: stop or start one component of a running cluster
# (same command line as `up` used), e.g. to restart kube-apiserver.
cmd_stop_one() {
  local name="${1:-}" pid i
  [[ -f "${STATE_DIR}/${name}.cmdline" ]] || die "unknown component '${name}' (components: ${COMPONENTS[*]})"
  if pid="$(component_pid "${name}")"; then
    kill -TERM "${pid}" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      readlink "/proc/${pid}/exe" >/dev/null 2>&1 || break
      sleep 0.2
    done
    kill -KILL "${pid}" 2>/dev/null || true
    log "stopped ${name} (pid ${pid})"
  else
    log "${name} is not running"
  fi
}

cmd_start_one() {
  local name="${1:-}" i
  [[ -f "${STATE_DIR}/${name}.cmdline" ]] || die "unknown component '${name}' (components: ${COMPONENTS[*]})"
  if alive "${name}"; then
    log "${name} is already running"
    return 0
  fi
  local -a argv
  local gogc=""
  eval "argv=($(cat "${STATE_DIR}/${name}.cmdline"))"
  if [[ "${argv[0]}" == GOGC=* ]]; then
    gogc="${argv[0]#GOGC=}"
    argv=("${argv[@]:1}")
  fi
  # An empty GOGC is Go's default, and is not recorded again.
  GOGC="${gogc}" start_component "${name}" "$(basename "${argv[0]}")" "${argv[@]:1}"
  case "${name}" in
    etcd) for ((i = 0; i < 150; i++)); do etcd_healthy && return 0; sleep 0.2; done ;;
    kube-apiserver) for ((i = 0; i < 300; i++)); do api_ready && return 0; sleep 0.2; done ;;
    *) alive "${name}" && return 0 ;;
  esac
  die "${name} did not come back; see ${LOG_DIR}/${name}.log"
}

case "${1:-}" in
  stop-component) shift; cmd_stop_one "$@" ;;
  start-component) shift; cmd_start_one "$@" ;;
  build) cmd_build; cmd_build_tools ;;
  build-tools) cmd_build_tools ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  logs) shift; cmd_logs "$@" ;;
  *) echo "usage: $0 {build|build-tools|up|env|status|down|logs [component]|stop-component NAME|start-component NAME}" >&2; exit 2 ;;
esac
