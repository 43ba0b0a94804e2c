-- The file and the kv key the two read routes compare, with the same bytes.
return function(req)
  files.put("bench/stat.txt", "hello", {content_type = "text/plain"})
  kv.set("bench/kv", "hello")
  return {json = {ok = true}}
end
