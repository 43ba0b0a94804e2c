-- POST /notes/notes {"text": "...", "tag": "..."} -> 201 {"id": "..."}
return function(req)
  local note = req.json
  if type(note) ~= "table" or type(note.text) ~= "string" or type(note.tag) ~= "string" then
    return { status = 400, json = { error = { code = "invalid_note", message = "send {\"text\": string, \"tag\": string}" } } }
  end
  local id = docs.insert("notes", { text = note.text, tag = note.tag, created_ms = time.now_ms() })
  return { status = 201, json = { id = id } }
end
