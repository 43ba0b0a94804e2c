-- GET /token?topic=T[&ttl=seconds]: a realtime token for T.
return function(req)
  local ok, token = pcall(realtime.token, req.query.topic, {
    ttl = tonumber(req.query.ttl),
    subject = "user-1",
  })
  if not ok then
    return { status = 400, json = { error = tostring(token) } }
  end
  return { json = { token = token } }
end
