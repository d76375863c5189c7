#!/usr/bin/env bash
# Runs docs/argocd-health.lua (the Argo CD health check for TenantSubscription)
# the way Argo CD runs a custom health check, against sample objects, and
# checks the verdicts.
#
#   hack/test-argocd-health.sh        exit 0 when every case passes
#   ARGOCD_HEALTH_SCRIPT=x.lua hack/test-argocd-health.sh   another script
#
# The runner is tco-argocd-health (hack/tools/argocd-health, built by
# `hack/cluster.sh build-tools` and put on PATH by `eval "$(hack/cluster.sh
# env)"`): gopher-lua, Argo CD's Lua 5.1, with only the base, table and
# package libraries unless the override sets useOpenLibs, and the live object
# as the global table `obj`. A script that calls string.*, math.* or os.*
# fails there as it would in Argo CD, so the cases run without open libraries.
# The live verdicts, on subscriptions the operator reconciles, are checked by
# tests/gitops_health.rs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="${ARGOCD_HEALTH_SCRIPT:-${ROOT}/docs/argocd-health.lua}"
RUNNER="${TCO_ARGOCD_HEALTH:-tco-argocd-health}"
command -v "${RUNNER}" >/dev/null 2>&1 || {
  echo "FAIL: ${RUNNER} is not on PATH: run hack/cluster.sh build-tools, then eval \"\$(hack/cluster.sh env)\"" >&2
  exit 1
}
[[ -f "${SCRIPT}" ]] || { echo "FAIL: ${SCRIPT} is missing" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

cond() { # type status reason [message]
  printf '{"type":"%s","status":"%s","reason":"%s","message":"%s","lastTransitionTime":"2026-07-01T00:00:00Z","observedGeneration":3}' \
    "$1" "$2" "$3" "${4:-}"
}
sub() { # status-JSON-or-absent [generation]
  local status=""
  [[ "$1" == absent ]] || status=",\"status\":$1"
  printf '{"apiVersion":"capacity.tenancy.dev/v1alpha1","kind":"TenantSubscription","metadata":{"name":"acme","namespace":"tenant-acme","generation":%s},"spec":{"tenantId":"acme","modules":[{"name":"video-call","concurrency":1000}]}%s}\n' \
    "${2:-3}" "${status}"
}
conditions() { # observedGeneration condition...
  local observed="$1" IFS=,
  shift
  printf '{"observedGeneration":%s,"activeWindows":[],"conditions":[%s,%s]}' "${observed}" "$*" \
    "$(cond CapacityLimited False WithinCeiling)"
}
quiet() { cond Reconciling False Reconciled; }
calm() { cond Stalled False Reconciled; }

NAMES=() WANT=() WANT_MSG=()
case_() { # name want message-part object
  NAMES+=("$1") WANT+=("$2") WANT_MSG+=("$3")
  printf '%s\n' "$4" >>"${WORK}/objects.json"
}

case_ "healthy: Ready=True, generation observed" Healthy "at or above" \
  "$(sub "$(conditions 3 "$(cond Ready True Available "2 module(s) at or above their floor")" "$(quiet)" "$(calm)")")"
case_ "progressing: no status at all" Progressing "operator" \
  "$(sub absent)"
case_ "progressing: the schema's default status (observedGeneration 0)" Progressing "generation 3" \
  "$(sub '{"observedGeneration":0,"activeWindows":[]}')"
case_ "progressing: observedGeneration behind metadata.generation" Progressing "generation 4" \
  "$(sub "$(conditions 3 "$(cond Ready True Available ok)" "$(quiet)" "$(calm)")" 4)"
case_ "progressing: Reconciling=True while Ready=False/Progressing" Progressing "video-call" \
  "$(sub "$(conditions 3 "$(cond Ready False Progressing "video-call: 0/2 replicas ready")" \
    "$(cond Reconciling True Progressing "video-call: 0/2 replicas ready")" "$(calm)")")"
case_ "progressing: Reconciling=True while still Ready=True (a drain)" Progressing "draining" \
  "$(sub "$(conditions 3 "$(cond Ready True Available ok)" \
    "$(cond Reconciling True Draining "draining live-streaming until 12:05")" "$(calm)")")"
case_ "progressing: paused, a lower ceiling still ramping down" Progressing "ramping" \
  "$(sub "$(conditions 3 "$(cond Ready True Paused "reconciliation is paused")" \
    "$(cond Reconciling True RampingDown "video-call: ramping down to 4 replicas")" "$(calm)")")"
case_ "degraded: Stalled=True (profile missing)" Degraded "ModuleProfile" \
  "$(sub "$(conditions 3 "$(cond Ready False ProfileNotFound "video-call: ModuleProfile video-call not found")" \
    "$(quiet)" "$(cond Stalled True ProfileNotFound "video-call: ModuleProfile video-call not found")")")"
case_ "degraded: over the plan while a module still drains" Degraded "plan pro" \
  "$(sub "$(conditions 3 "$(cond Ready False ExceedsPlan "not applied: video-call: 5000 concurrent sessions, plan pro sells at most 2000")" \
    "$(cond Reconciling False Stalled "stalled (see Stalled); meanwhile: draining im")" \
    "$(cond Stalled True ExceedsPlan "video-call: 5000 concurrent sessions, plan pro sells at most 2000")")")"
case_ "degraded: Ready=False with reason ExceedsPlan (no Stalled)" Degraded "plan pro" \
  "$(sub "$(conditions 3 "$(cond Ready False ExceedsPlan "video-call: 5000 concurrent sessions, plan pro sells at most 2000")" \
    "$(quiet)")")"
case_ "suspended: paused, Ready=True with reason Paused" Suspended "paused" \
  "$(sub "$(conditions 3 "$(cond Ready True Paused "reconciliation is paused (spec.paused); children are left as they are")" "$(quiet)" "$(calm)")")"
case_ "suspended: paused as earlier operator versions said it (Ready=False)" Suspended "paused" \
  "$(sub "$(conditions 3 "$(cond Ready False Paused "reconciliation is paused (spec.paused)")" "$(quiet)" "$(calm)")")"

echo "argocd-health: ${RUNNER} (gopher-lua, no open libraries) on ${SCRIPT#"${ROOT}"/}"
passed=0 failed=0
if ! "${RUNNER}" "${SCRIPT}" <"${WORK}/objects.json" >"${WORK}/verdicts" 2>"${WORK}/errors"; then
  echo "FAIL: the script does not run as Argo CD runs it:"
  cat "${WORK}/errors"
  exit 1
fi
mapfile -t VERDICTS <"${WORK}/verdicts"
[[ ${#VERDICTS[@]} -eq ${#NAMES[@]} ]] || {
  echo "FAIL: ${#NAMES[@]} objects, ${#VERDICTS[@]} verdicts"
  exit 1
}
declare -A seen=()
for i in "${!NAMES[@]}"; do
  got="${VERDICTS[$i]%%$'\t'*}" message="${VERDICTS[$i]#*$'\t'}"
  if [[ "${got}" != "${WANT[$i]}" ]]; then
    echo "FAIL ${NAMES[$i]}: want ${WANT[$i]}, got ${got} (${message})"
    failed=$((failed + 1))
  elif [[ "${message}" != *"${WANT_MSG[$i]}"* ]]; then
    echo "FAIL ${NAMES[$i]}: message \"${message}\" lacks \"${WANT_MSG[$i]}\""
    failed=$((failed + 1))
  else
    echo "ok   ${NAMES[$i]} -> ${got} (${message})"
    seen[${got}]=1
    passed=$((passed + 1))
  fi
done
for s in Healthy Progressing Degraded Suspended; do
  [[ -n "${seen[${s}]:-}" ]] || { echo "FAIL no passing case for ${s}"; failed=$((failed + 1)); }
done

# The runner itself: without open libraries the string library is absent
# (as in Argo CD), with -open-libs (useOpenLibs: true) it is there.
printf '%s\n' 'return {status = string.format("%s", "Healthy"), message = "x"}' >"${WORK}/strings.lua"
if "${RUNNER}" "${WORK}/strings.lua" <<<"$(sub absent)" >/dev/null 2>&1; then
  echo "FAIL the runner opened the string library without -open-libs"
  failed=$((failed + 1))
elif [[ "$("${RUNNER}" -open-libs "${WORK}/strings.lua" <<<"$(sub absent)")" != $'Healthy\tx' ]]; then
  echo "FAIL the runner with -open-libs cannot call string.format"
  failed=$((failed + 1))
else
  echo "ok   string library only with -open-libs"
  passed=$((passed + 1))
fi

echo "${passed} passed, ${failed} failed"
[[ ${failed} -eq 0 ]]
