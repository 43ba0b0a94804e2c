-- DELETE /todo/todos/:id
return function(req)
  if kv.delete("todo/" .. req.params.id) then
    return { status = 200, json = { deleted = req.params.id } }
  end
  return { status = 404, json = { error = { code = "todo_not_found", message = "no todo " .. req.params.id } } }
end
