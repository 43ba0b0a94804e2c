-- PUT /orders/orders/:id {"qty": n} -> 202: fulfilment happens in the trigger.
return function(req)
  if type(req.json) ~= "table" then
    return { status = 400, json = { error = { code = "invalid_order", message = "send {\"qty\": integer}" } } }
  end
  kv.set("orders/" .. req.params.id, { qty = req.json.qty })
  return { status = 202, json = { accepted = req.params.id } }
end
