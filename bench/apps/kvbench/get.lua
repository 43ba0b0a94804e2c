return function(req)
  local value = kv.get(req.params.key)
  return value and "hit" or "miss"
end
