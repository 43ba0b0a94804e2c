-- One login: one argon2id verification and one session write.
return function(req)
  local session, code = users.login("bench@example.org", "bench-password-0123")
  if not session then
    return {status = 500, json = {error = code}}
  end
  return "ok"
end
