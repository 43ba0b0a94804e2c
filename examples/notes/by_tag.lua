-- GET /notes/notes/tag/:tag -> {"notes": [text, ...], "plan": "index"}
-- Ids are time-ordered, so the notes come back oldest first.
return function(req)
  local page = docs.find("notes", { tag = req.params.tag }, { limit = 100, explain = true })
  local texts = {}
  for i, note in ipairs(page.items) do
    texts[i] = note.text
  end
  return { json = { notes = json.array(texts), plan = page.explain.plan } }
end
