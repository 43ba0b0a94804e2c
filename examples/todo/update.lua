-- PATCH /todo/todos/:id {"done": true, "title": "..."}: compare-and-swap so two
-- concurrent updates never silently overwrite each other.
return function(req)
  local key = "todo/" .. req.params.id
  local patch = req.json
  if type(patch) ~= "table" then
    return { status = 400, json = { error = { code = "invalid_todo", message = "body must be a JSON object" } } }
  end
  for _ = 1, 5 do
    local current = kv.get(key)
    if current == nil then
      return { status = 404, json = { error = { code = "todo_not_found", message = "no todo " .. req.params.id } } }
    end
    local updated = { id = current.id, title = current.title, done = current.done, created = current.created }
    if patch.done ~= nil then updated.done = patch.done == true end
    if type(patch.title) == "string" and patch.title ~= "" then updated.title = patch.title end
    if kv.cas(key, current, updated) then
      return { status = 200, json = updated }
    end
  end
  return { status = 409, json = { error = { code = "conflict", message = "todo changed concurrently; retry" } } }
end
