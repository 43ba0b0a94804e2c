-- One session check, the token in the `authorization` header.
return function(req)
  local user = users.verify(req.headers["authorization"] or "")
  if not user then
    return {status = 401, body = "no session"}
  end
  return "ok"
end
