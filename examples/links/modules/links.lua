-- require("links"): the app's own module, using the pinned shared library.
local slug = require("@slug")

local M = {}

function M.entry(title, url)
  return { title = title, url = url, slug = slug.slugify(title) }
end

return M
