-- GET /hello/plain -> "hello" (no storage: the floor of a script route)
return function(req)
  return "hello"
end
