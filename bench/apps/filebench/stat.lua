return function(req)
  local stat = files.stat("small/" .. req.params.n)
  return stat and "hit" or "miss"
end
