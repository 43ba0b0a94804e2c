-- One document; both indexes gain an entry.
return function(req)
  local n = req.params.n
  local id = docs.insert("users", {email = "w" .. n .. "@x", name = "writer " .. n, city = "c" .. (#n % 7), age = #n})
  return {status = 201, json = {id = id}}
end
