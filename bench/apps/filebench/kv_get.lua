return function(req)
  return {json = {value = kv.get("bench/kv")}}
end
