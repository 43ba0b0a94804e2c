-- Creates the bench user (once) and answers a session token for /verify.
return function(req)
  if not users.find{email = "bench@example.org"} then
    users.create{email = "bench@example.org", password = "bench-password-0123"}
  end
  local session = users.login("bench@example.org", "bench-password-0123")
  return {json = {token = session.token}}
end
