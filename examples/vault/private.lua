-- GET /vault/private with "authorization: Bearer <API_TOKEN>" -> 200.
-- The secret is read per request (a set or rotation applies at once) and
-- never returned or logged.
return function(req)
  local token = secrets.get("API_TOKEN")
  if token == nil then
    return { status = 503, json = { error = { code = "not_configured", message = "secret API_TOKEN is not set" } } }
  end
  if req.headers["authorization"] ~= "Bearer " .. token then
    return { status = 401, json = { error = { code = "unauthorized", message = "a valid bearer token is required" } } }
  end
  return { json = { ok = true } }
end
