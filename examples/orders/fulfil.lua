-- kv trigger on orders/*: writes a receipt. Its writes commit with the run,
-- once, even if the run is retried.
return function(event, ctx)
  local qty = event.new.qty
  if math.type(qty) ~= "integer" or qty < 1 then
    error("cannot fulfil " .. event.key .. ": qty must be a positive integer")
  end
  local id = event.key:sub(#"orders/" + 1)
  kv.set("receipts/" .. id, { qty = qty, attempt = ctx.attempt })
end
