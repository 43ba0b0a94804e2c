-- GET /redirect?to=URL: a 302 to URL (the namespace test's redirects).
return function(req)
  return { status = 302, headers = { location = req.query.to } }
end
