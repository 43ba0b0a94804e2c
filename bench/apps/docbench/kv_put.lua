-- The baseline: one kv write of a value of the same size.
return function(req)
  local n = req.params.n
  kv.set("u/" .. n, {email = "w" .. n .. "@x", name = "writer " .. n, city = "c" .. (#n % 7), age = #n})
  return {status = 201, json = {ok = true}}
end
