return function(event, ctx)
  local key = string.sub(event.key, 4)
  kv.set("out/" .. key, { w = event.new, r = time.now_ms() })
end
