-- Every kv call once, in order; returns what each gave back.
return function(req)
  local out = {}
  kv.set("doc", { name = "pi", tags = { "a", "b" }, n = 1.5, ok = true })
  out.get = kv.get("doc")
  out.stale = kv.get("doc", { consistency = "stale" })
  out.missing = kv.get("nope") == nil
  out.incr1 = kv.incr("counter", 5)
  out.incr2 = kv.incr("counter")
  out.cas_absent = kv.cas("slot", nil, "first")
  out.cas_wrong = kv.cas("slot", "other", "second")
  out.cas_right = kv.cas("slot", "first", "second")
  out.slot = kv.get("slot")
  out.cas_number = kv.cas("counter", 6.0, 10)
  out.deleted = kv.delete("slot")
  out.deleted_again = kv.delete("slot")
  for i = 1, 5 do kv.set("list/" .. i, i) end
  local page1 = kv.list({ prefix = "list/", limit = 2 })
  local page2 = kv.list({ prefix = "list/", limit = 2, cursor = page1.cursor })
  local page3 = kv.list({ prefix = "list/", limit = 2, cursor = page2.cursor })
  out.pages = { #page1.items, #page2.items, #page3.items, page3.cursor == nil }
  out.first_key = page1.items[1].key
  out.atomic = kv.atomic({
    { op = "set", key = "a1", value = "x" },
    { op = "incr", key = "a2", by = 2 },
    { op = "cas", key = "a1", expected = "x", new = "y" },
    { op = "delete", key = "list/1" },
  })
  out.a1 = kv.get("a1")
  local ok, err = pcall(kv.atomic, {
    { op = "set", key = "a3", value = "never" },
    { op = "cas", key = "a1", expected = "wrong", new = "z" },
  })
  out.atomic_failed = (not ok) and tostring(err):match("^atomic_cas_failed") ~= nil
  out.a3 = kv.get("a3") == nil
  out.json = json.decode(json.encode({ k = { 1, 2, 3 } })).k[3]
  out.time_ok = time.now() > 1.7e9 and time.now_ms() > 1.7e12
  log.warn("sdk run done")
  return { status = 200, json = out }
end
