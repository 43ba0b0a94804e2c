-- Counts the durable messages of "feed" and keeps the last event.
return function(event)
  kv.incr("feed_runs", 1)
  kv.set("feed_last", event)
end
