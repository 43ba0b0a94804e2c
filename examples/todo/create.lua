-- POST /todo/todos {"title": "..."} -> 201 {"id": ..., "title": ..., "done": false}
return function(req)
  local body = req.json
  if type(body) ~= "table" or type(body.title) ~= "string" or body.title == "" then
    return { status = 400, json = { error = { code = "invalid_todo", message = "body must be {\"title\": \"...\"}" } } }
  end
  if #body.title > 200 then
    return { status = 400, json = { error = { code = "invalid_todo", message = "title is longer than 200 characters" } } }
  end
  -- Zero-padded ids keep kv.list (byte order) in creation order.
  local id = string.format("%08d", kv.incr("next_id", 1))
  local todo = { id = id, title = body.title, done = false, created = time.now() }
  kv.set("todo/" .. id, todo)
  log.info("created todo " .. id)
  return { status = 201, json = todo }
end
