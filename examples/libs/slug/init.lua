-- Shared library "slug": publish with `picloud libs publish slug examples/libs/slug`,
-- then pin it in an app's picloud.toml ([libs] slug = 1) and `require("@slug")`.
local M = {}

-- "Hello, World!" -> "hello-world"
function M.slugify(text)
  local slug = text:lower():gsub("[^%w]+", "-"):gsub("^%-+", ""):gsub("%-+$", "")
  return slug
end

return M
