return function(req)
  pubsub.publish_durable("bench/d", { t = 0 })
  return "ok"
end
