-- POST /fill/:n?count=C&bytes=B: C kv values of B bytes each, keys v/<n>/<i>.
-- The bytes vary per request so no two values are equal.
return function(req)
  local n = req.params.n
  local count = tonumber(req.query.count) or 16
  local bytes = tonumber(req.query.bytes) or 61440
  local seed = string.format("%08d", tonumber(n) % 100000000)
  local value = string.rep(seed, bytes // #seed)
  for i = 1, count do
    kv.set("v/" .. n .. "/" .. i, value)
  end
  return {status = 201, json = {ok = true}}
end
