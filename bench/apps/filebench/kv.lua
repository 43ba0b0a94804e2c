return function(req)
  local value = kv.get("small/" .. req.params.n)
  return value and "hit" or "miss"
end
