-- GET /orders/alerts -> {"alerts": [{"delivery_id", "trigger", "code", "error"}, ...]}
-- The delivery id (the key's suffix) is what `picloud dead-letters retry` takes.
return function(req)
  local alerts = {}
  for _, item in ipairs(kv.list({ prefix = "alerts/", limit = 100 }).items) do
    local alert = item.value
    alert.delivery_id = item.key:sub(#"alerts/" + 1)
    table.insert(alerts, alert)
  end
  return { json = { alerts = json.array(alerts) } }
end
