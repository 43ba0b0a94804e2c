-- dead_letter trigger: a run of this app failed for good. Record it where an
-- operator looks (`picloud dead-letters list orders` shows it too).
return function(event, ctx)
  kv.set("alerts/" .. event.delivery_id, { trigger = event.trigger, code = event.code, error = event.error })
  log.warn("dead letter from " .. event.trigger .. ": " .. tostring(event.error))
end
