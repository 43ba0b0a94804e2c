-- Echoes what the handler sees of the request.
return function(req)
  return {
    status = 201,
    headers = { ["x-echo"] = "yes" },
    json = {
      method = req.method, path = req.path, rest = req.params.rest,
      query = req.query, header = req.headers["x-test"],
      body = req.body, json = req.json,
    },
  }
end
