return function(req)
  kv.set("in/" .. req.params.key, time.now_ms())
  return { status = 201, body = "ok" }
end
