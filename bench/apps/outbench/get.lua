-- GET ?url=...: fetches it and answers with the upstream's status and body
-- (the bench's route).
return function(req)
  local response = http.get(req.query.url)
  return { status = response.status, body = response.body }
end
