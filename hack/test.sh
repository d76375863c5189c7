#!/usr/bin/env bash
# The project's single "run the whole test suite" command.
#
#   hack/test.sh                  cargo test --locked --all-targets -- --test-threads=4, then doc tests
#   hack/test.sh <cargo args...>  cargo test --locked <cargo args...> instead
#
# Makes sure the commands it needs are here (hack/prerequisites.sh) and the
# local cluster (hack/cluster.sh) and the test tools are built and the cluster is up, points KUBECONFIG and PATH
# at it, runs the tests, and stops the cluster again if this script started it
# (keep it with TCO_KEEP_CLUSTER=1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
CLUSTER="${ROOT}/hack/cluster.sh"

log() { printf '[test] %s\n' "$*" >&2; }

"${ROOT}/hack/prerequisites.sh"

if "${CLUSTER}" status >/dev/null 2>&1; then
  log "using the cluster that is already up"
  # The test helpers (hack/tools) may have changed since it was started:
  # built into a cache folder of their own, cheap when cached.
  "${CLUSTER}" build-tools
else
  if [[ "${TCO_KEEP_CLUSTER:-0}" == 1 ]]; then
    log "starting the cluster (TCO_KEEP_CLUSTER=1: it stays up afterwards)"
  else
    log "starting the cluster (stopped again on exit; TCO_KEEP_CLUSTER=1 keeps it)"
    trap '"${CLUSTER}" down' EXIT
  fi
  # The HPA controller syncs every 5s (upstream and the cluster's default:
  # 15s) so the tests that wait on an HPA's decision wait less.
  TCO_HPA_SYNC_PERIOD="${TCO_HPA_SYNC_PERIOD:-5s}" "${CLUSTER}" up # implies build; cheap when cached
fi
# The tools the tests run beside the cluster (promtool, prometheus, the
# hack/tools helpers); cheap when cached.
"${CLUSTER}" build-tools
eval "$("${CLUSTER}" env)"
log "KUBECONFIG=${KUBECONFIG}"

if [[ $# -gt 0 ]]; then
  cargo test --locked "$@"
else
  cargo test --locked --all-targets -- --test-threads="${TCO_TEST_THREADS:-4}"
  cargo test --locked --doc
fi
