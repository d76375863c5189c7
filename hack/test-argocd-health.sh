#!/usr/bin/env bash
# Runs docs/argocd-health.lua (the Argo CD health check for TenantSubscription)
# in a real Lua interpreter against sample objects and checks the verdicts.
#
#   hack/test-argocd-health.sh        exit 0 when every case passes
#   LUA=lua5.1 hack/test-argocd-health.sh   another interpreter
#   ARGOCD_HEALTH_SCRIPT=x.lua hack/test-argocd-health.sh   another script
#
# Argo CD runs health scripts in gopher-lua (Lua 5.1) with the live object as
# the global table `obj`; the script returns {status=..., message=...}. The
# script uses nothing beyond Lua 5.1, so lua5.4 (Debian: apt-get install
# lua5.4) runs it the same way.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="${ARGOCD_HEALTH_SCRIPT:-${ROOT}/docs/argocd-health.lua}"
LUA="${LUA:-}"
if [[ -z "${LUA}" ]]; then
  for candidate in lua5.4 lua; do
    if command -v "${candidate}" >/dev/null 2>&1; then LUA="${candidate}"; break; fi
  done
fi
if [[ -z "${LUA}" ]] || ! command -v "${LUA}" >/dev/null 2>&1; then
  echo "FAIL: no Lua interpreter (install Debian's lua5.4: apt-get install lua5.4)" >&2
  exit 1
fi
[[ -f "${SCRIPT}" ]] || { echo "FAIL: ${SCRIPT} is missing" >&2; exit 1; }

DRIVER="$(mktemp)"
trap 'rm -f "${DRIVER}"' EXIT
cat >"${DRIVER}" <<'LUA'
local script_path = arg[1]
local check = assert(loadfile(script_path))

local function cond(kind, status, reason, message)
  return {type = kind, status = status, reason = reason, message = message or "",
          lastTransitionTime = "2026-07-01T00:00:00Z", observedGeneration = 3}
end

local function sub(status, generation)
  return {
    apiVersion = "capacity.tenancy.dev/v1alpha1",
    kind = "TenantSubscription",
    metadata = {name = "acme", namespace = "tenant-acme", generation = generation or 3},
    spec = {tenantId = "acme", modules = {{name = "video-call", concurrency = 1000}}},
    status = status,
  }
end

local function converged(ready, reconciling, stalled, observed)
  return {observedGeneration = observed or 3, conditions = {ready, reconciling, stalled,
          cond("CapacityLimited", "False", "WithinCeiling")}}
end

local cases = {
  {"healthy: Ready=True, generation observed", "Healthy", "at or above",
    sub(converged(cond("Ready", "True", "Available", "2 module(s) at or above their floor"),
                  cond("Reconciling", "False", "Reconciled"), cond("Stalled", "False", "Reconciled")))},
  {"progressing: no status yet", "Progressing", "operator",
    sub(nil)},
  {"progressing: empty status", "Progressing", "generation 3",
    sub({})},
  {"progressing: observedGeneration behind metadata.generation", "Progressing", "generation 4",
    sub(converged(cond("Ready", "True", "Available", "ok"),
                  cond("Reconciling", "False", "Reconciled"), cond("Stalled", "False", "Reconciled")), 4)},
  {"progressing: Reconciling=True while Ready=False/Progressing", "Progressing", "video-call",
    sub(converged(cond("Ready", "False", "Progressing", "video-call: 0/2 replicas ready"),
                  cond("Reconciling", "True", "Progressing", "video-call: 0/2 replicas ready"),
                  cond("Stalled", "False", "Reconciled")))},
  {"progressing: Reconciling=True while still Ready=True", "Progressing", "draining",
    sub(converged(cond("Ready", "True", "Available", "ok"),
                  cond("Reconciling", "True", "Draining", "live-streaming: draining"),
                  cond("Stalled", "False", "Reconciled")))},
  {"degraded: Stalled=True", "Degraded", "ModuleProfile",
    sub(converged(cond("Ready", "False", "ProfileNotFound", "video-call: ModuleProfile video-call not found"),
                  cond("Reconciling", "False", "Reconciled"),
                  cond("Stalled", "True", "ProfileNotFound", "video-call: ModuleProfile video-call not found")))},
  {"degraded: Ready=False with reason ExceedsPlan", "Degraded", "plan pro",
    sub(converged(cond("Ready", "False", "ExceedsPlan", "video-call: 5000 concurrent sessions, plan pro sells at most 2000"),
                  cond("Reconciling", "False", "Reconciled"), cond("Stalled", "False", "Reconciled")))},
  {"suspended: Ready reason Paused", "Suspended", "paused",
    sub(converged(cond("Ready", "False", "Paused", "reconciliation is paused (spec.paused); children are left as they are"),
                  cond("Reconciling", "False", "Reconciled"), cond("Stalled", "False", "Reconciled")))},
}

local passed, failed, seen = 0, 0, {}
for _, c in ipairs(cases) do
  local name, want, want_msg, sample = c[1], c[2], c[3], c[4]
  obj = sample
  local ok, hs = pcall(check)
  if not ok then
    print("FAIL " .. name .. ": script error: " .. tostring(hs))
    failed = failed + 1
  elseif type(hs) ~= "table" or hs.status ~= want then
    print("FAIL " .. name .. ": want " .. want .. ", got " .. tostring(type(hs) == "table" and hs.status or hs))
    failed = failed + 1
  elseif type(hs.message) ~= "string" or not string.find(hs.message, want_msg, 1, true) then
    print("FAIL " .. name .. ": message " .. string.format("%q", tostring(hs.message)) .. " lacks " .. string.format("%q", want_msg))
    failed = failed + 1
  else
    print("ok   " .. name .. " -> " .. hs.status .. " (" .. hs.message .. ")")
    seen[want] = true
    passed = passed + 1
  end
end
for _, s in ipairs({"Healthy", "Progressing", "Degraded", "Suspended"}) do
  if not seen[s] then
    print("FAIL no passing case for " .. s)
    failed = failed + 1
  end
end
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
LUA

echo "argocd-health: $("${LUA}" -v 2>&1 | head -n1)"
"${LUA}" "${DRIVER}" "${SCRIPT}"
