-- POST /pub?topic=T[&durable=1] with a JSON body: publishes it; answers
-- {id = position} or {error = "<code>: <message>"}.
return function(req)
  local ok, id = pcall(function()
    if req.query.durable == "1" then
      return pubsub.publish_durable(req.query.topic, req.json)
    end
    return pubsub.publish(req.query.topic, req.json)
  end)
  if not ok then
    return { status = 400, json = { error = tostring(id) } }
  end
  return { json = { id = id } }
end
