-- kv trigger on hooks/*: posts the event to the hook's URL with the run's
-- delivery id as the idempotency key (a retried run sends it again), and
-- records the answer's status with the run.
return function(event, ctx)
  local response = http.post(event.new.url, { key = event.key }, {
    headers = { ["idempotency-key"] = ctx.delivery_id },
  })
  kv.set("notified/" .. event.key:sub(#"hooks/" + 1), response.status)
end
