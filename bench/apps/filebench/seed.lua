-- One kv key per small file (100 per request, from `from`), so kv.get and
-- files.stat read the same names.
return function(req)
  local from = tonumber(req.params.from)
  for n = from, from + 99 do
    kv.set("small/" .. n, { size = 65536 })
  end
  return "ok"
end
