-- Makes the outbound request the test describes in its JSON body and
-- reports what came back, or the error's text (its code first).
-- {via = "request", options = {...}} | {via = "get", url =, options =}
-- | {via = "post", url =, body =, options =}
return function(req)
  local spec = req.json
  local ok, result = pcall(function()
    if spec.via == "get" then
      return http.get(spec.url, spec.options)
    elseif spec.via == "post" then
      return http.post(spec.url, spec.body, spec.options)
    end
    return http.request(spec.options)
  end)
  if not ok then
    return { json = { error = tostring(result) } }
  end
  return {
    json = { status = result.status, headers = result.headers, body = result.body, json = result.json },
  }
end
