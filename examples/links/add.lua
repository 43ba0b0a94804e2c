-- POST /links/links {"title": "...", "url": "..."} -> 201 {"title", "url", "slug"}
local links = require("links")

return function(req)
  local body = req.json
  if type(body) ~= "table" or type(body.title) ~= "string" or type(body.url) ~= "string" then
    return { status = 400, json = { error = { code = "invalid_link", message = "send {\"title\": string, \"url\": string}" } } }
  end
  local entry = links.entry(body.title, body.url)
  kv.set("links/" .. entry.slug, entry)
  return { status = 201, json = entry }
end
