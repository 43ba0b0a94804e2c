return function(req)
  pubsub.publish("bench/t", req.json)
  return "ok"
end
