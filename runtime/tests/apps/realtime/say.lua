-- POST /say?n=N with a JSON body: stores it under say/N.
return function(req)
  kv.set("say/" .. req.query.n, req.json)
  return { json = { ok = true } }
end
