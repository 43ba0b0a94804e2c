return function(req)
  kv.set(req.params.key, 1)
  return "ok"
end
