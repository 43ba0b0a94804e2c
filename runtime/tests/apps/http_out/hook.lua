-- PUT /hook/:id {"url": "..."}: the notify trigger posts to the URL.
return function(req)
  kv.set("hooks/" .. req.params.id, { url = req.json.url })
  return { status = 202, json = { accepted = req.params.id } }
end
