-- GET /sdk/ttl/:key?set=1 sets a 1-second value; without ?set it reads it.
return function(req)
  if req.query.set then
    kv.set(req.params.key, "short-lived", { ttl = 1 })
    return "set"
  end
  local value = kv.get(req.params.key)
  return { json = { present = value ~= nil } }
end
