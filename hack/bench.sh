#!/usr/bin/env bash
# Scale benchmark against the local control plane (docs/benchmarks.md).
#   hack/bench.sh                     # 1,000 tenants × 3 modules
#   hack/bench.sh --tenants 10000     # the large run
#   hack/bench.sh --help              # every option
# Starts the local cluster when it is not up (and leaves it up). Results:
# a table on stdout, JSON in target/bench/scale-<N>.json, operator logs in
# target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! hack/cluster.sh status >/dev/null 2>&1; then
  hack/cluster.sh build
  # Thousands of tenants: let the controller manager (ReplicaSets, pods,
  # namespace deletion) keep up, so the figures are about the operator.
  TCO_KCM_QPS="${TCO_KCM_QPS:-400}" hack/cluster.sh up
fi
eval "$(hack/cluster.sh env)"
exec cargo bench --bench scale -- "$@"
