-- GET /orders/orders/:id -> {"order": {...}, "receipt": {...} | null}
return function(req)
  local id = req.params.id
  local order = kv.get("orders/" .. id)
  if order == nil then
    return { status = 404, json = { error = { code = "order_not_found", message = "no order " .. id } } }
  end
  return { json = { order = order, receipt = kv.get("receipts/" .. id) or json.null } }
end
