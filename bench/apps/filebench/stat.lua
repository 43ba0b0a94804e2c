return function(req)
  local stat = files.stat("bench/stat.txt")
  return {json = {size = stat.size}}
end
