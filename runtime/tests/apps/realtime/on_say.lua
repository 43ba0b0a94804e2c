-- Publishes each say/* write on "said", committed with this run (inside a
-- run the id is nil: it is assigned when the run commits).
return function(event)
  pubsub.publish_durable("said", { key = event.key, value = event.new })
end
