#!/usr/bin/env bash
# Rides the operator through API-server, etcd and combined outages many times
# in a row and prints how long it took to converge after each (the faults
# test `api_server_and_etcd_outages_are_ridden_out_without_a_restart`).
#
#   hack/outages.sh [RUNS]          # default 20; the local cluster must be up
#
# Each run's output is kept in target/outages/run-N.log; the summary lists
# every recovery time per outage kind, sorted, with the median and the worst,
# and the runs that failed.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
hack/cluster.sh status >/dev/null || { echo "the local cluster is not up (hack/cluster.sh up)" >&2; exit 1; }
eval "$(hack/cluster.sh env)"
out=target/outages
mkdir -p "${out}"
rm -f "${out}"/run-*.log
cargo test --locked --quiet --test faults --no-run >/dev/null # build errors show on stderr
failed=0
for i in $(seq 1 "${runs}"); do
  if cargo test --locked --test faults api_server_and_etcd_outages -- --nocapture >"${out}/run-${i}.log" 2>&1; then
    echo "run ${i}: ok $(grep -o 'converged [0-9.]*[mµn]*s' "${out}/run-${i}.log" | awk '{print $2}' | paste -sd' ')"
  else
    failed=$((failed + 1))
    echo "run ${i}: FAILED ($(grep -m1 -o 'timed out after [^"]*\|took [^"]* to converge[^"]*' "${out}/run-${i}.log" || echo 'see log'))"
  fi
done
echo
echo "seconds until converged after the API was back, over ${runs} runs (${failed} failed):"
for kind in '\["kube-apiserver"\]' '\["etcd"\]' '\["kube-apiserver", "etcd"\]'; do
  grep -h "^${kind} outage: converged" "${out}"/run-*.log |
    sed -E 's/.*converged ([0-9.]+)(ms|µs|s) after.*/\1 \2/' |
    awk '{ v = $1; if ($2 == "ms") v /= 1000; if ($2 == "µs") v /= 1e6; print v }' |
    sort -n |
    awk -v k="${kind//\\/}" '{ a[NR] = $1 } END {
      if (NR == 0) { printf "%-28s no samples\n", k; exit }
      printf "%-28s n=%d median %.1f  max %.1f  all:", k, NR, a[int((NR + 1) / 2)], a[NR]
      for (i = 1; i <= NR; i++) printf " %.1f", a[i]; printf "\n" }'
done
exit $((failed > 0))
