-- GET /links/links -> {"links": [...]} in slug order.
return function(req)
  local page = kv.list({ prefix = "links/", limit = 100 })
  local out = {}
  for i, item in ipairs(page.items) do
    out[i] = item.value
  end
  return { json = { links = json.array(out) } }
end
