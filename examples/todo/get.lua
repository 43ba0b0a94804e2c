-- GET /todo/todos/:id
return function(req)
  local todo = kv.get("todo/" .. req.params.id)
  if todo == nil then
    return { status = 404, json = { error = { code = "todo_not_found", message = "no todo " .. req.params.id } } }
  end
  return { status = 200, json = todo }
end
