-- Argo CD health check for capacity.tenancy.dev/TenantSubscription.
-- Register it in argocd-cm under
--   resource.customizations.health.capacity.tenancy.dev_TenantSubscription
-- (see docs/gitops.md). Argo CD passes the live object as the table `obj`.
-- It needs no useOpenLibs: it uses only Lua 5.1's base functions (Argo CD
-- opens no string, math or os library for a custom check by default).
--
-- The same verdicts as kstatus (Flux, kpt), in Argo CD's words:
--   Progressing  not observed yet (no status, or the schema's default
--                status.observedGeneration 0), observedGeneration behind
--                metadata.generation, or Reconciling=True (pods starting,
--                a module draining, a ceiling ramping down)
--   Degraded     Stalled=True: the spec is refused (ExceedsPlan,
--                ModuleNotInPlan, TierNotFound, PlanNotFound,
--                ProfileNotFound, ...) or cannot act (NamespaceNotAssigned,
--                ObjectConflict, ...); or Ready=False for such a reason
--   Suspended    Ready with reason Paused (spec.paused: true) and nothing
--                under way
--   Healthy      Ready=True at the generation observed
local hs = {}

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function message_of(c, fallback)
  if c ~= nil and type(c.message) == "string" and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata and obj.metadata.generation or nil
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = condition(status, "Ready")
local reconciling = condition(status, "Reconciling")
local stalled = condition(status, "Stalled")

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message_of(stalled, message_of(ready, "Stalled: " .. tostring(stalled.reason)))
  return hs
end

if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = message_of(reconciling, "Reconciling")
  return hs
end

if ready ~= nil and ready.reason == "Paused" then
  hs.status = "Suspended"
  hs.message = message_of(ready, "Reconciliation is paused (spec.paused)")
  return hs
end

if ready ~= nil and ready.status == "False" and ready.reason ~= "Progressing" then
  hs.status = "Degraded"
  hs.message = message_of(ready, "Not ready: " .. tostring(ready.reason))
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message_of(ready, "Ready")
  return hs
end

hs.status = "Progressing"
hs.message = message_of(ready, "Waiting for the Ready condition")
return hs
