-- Service errors reach scripts with stable codes, and limits hold.
return function(req)
  local out = {}
  kv.set("text", "not a number")
  local ok, err = pcall(kv.incr, "text", 1)
  out.incr = tostring(err):match("^(%w+_%w+_%w+)")
  ok, err = pcall(kv.set, string.rep("k", 600), 1)
  out.long_key = tostring(err):match("^([%w_]+)")
  ok, err = pcall(kv.set, "big", string.rep("v", 300 * 1024))
  out.big_value = tostring(err):match("^([%w_]+)")
  ok, err = pcall(kv.list, { limit = 100000 })
  out.big_page = tostring(err):match("^([%w_]+)")
  ok, err = pcall(kv.set, "nil", nil)
  out.nil_value = not ok
  return { json = out }
end
