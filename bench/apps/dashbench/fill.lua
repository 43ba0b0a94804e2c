return function(req)
  for n = 1, 50 do
    kv.set("in/" .. req.params.batch .. "-" .. n, n)
  end
  return { status = 201, body = "ok" }
end
