-- An equality the unique email index serves.
return function(req)
  local page = docs.find("users", {email = "u" .. req.params.n .. "@x"}, {limit = 1})
  return {json = {found = #page.items}}
end
