-- The signed GET URLs of small/0 .. small/<count-1>, one per line.
return function(req)
  local urls = {}
  for n = 0, tonumber(req.params.count) - 1 do
    urls[#urls + 1] = files.url("small/" .. n, { ttl = 3600 })
  end
  return table.concat(urls, "\n")
end
