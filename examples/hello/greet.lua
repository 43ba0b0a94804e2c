-- GET /hello/greet/:name -> {"hello": name, "count": n}
-- Counts greetings in the replicated kv store: each call is one Raft write.
return function(req)
  local count = kv.incr("greetings", 1)
  log.info("greeted " .. req.params.name .. " (#" .. count .. ")")
  return { status = 200, json = { hello = req.params.name, count = count } }
end
