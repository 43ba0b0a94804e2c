return function(req)
  return "hello"
end
