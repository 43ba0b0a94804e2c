-- GET /seen: what on_feed.lua recorded.
return function(req)
  return { json = { runs = kv.get("feed_runs"), last = kv.get("feed_last") } }
end
