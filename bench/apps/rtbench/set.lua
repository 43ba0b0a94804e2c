return function(req)
  kv.set(req.params.key, { t = 0 })
  return "ok"
end
