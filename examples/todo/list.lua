-- GET /todo/todos?limit=20&cursor=... -> {"todos": [...], "cursor": "..." | null}
return function(req)
  local limit = tonumber(req.query.limit or "20")
  if not limit or limit < 1 or limit > 100 then
    return { status = 400, json = { error = { code = "invalid_limit", message = "limit must be 1 to 100" } } }
  end
  local page = kv.list({ prefix = "todo/", limit = math.floor(limit), cursor = req.query.cursor })
  local todos = {}
  for i, item in ipairs(page.items) do
    todos[i] = item.value
  end
  return { status = 200, json = { todos = todos, cursor = page.cursor or json.null } }
end
