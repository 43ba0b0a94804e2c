-- The same lookup on a field no index covers: a collection scan.
return function(req)
  local page = docs.find("users", {name = "user " .. req.params.n}, {limit = 1})
  return {json = {found = #page.items}}
end
