-- Keep-alive requests that differ from one another: a new path per request (/small?1,
-- /small?2, ...), so that nothing can be remembered from one request to the next (the
-- client's rewriter remembers a repeated one).  The summary line is report.lua's.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/small?" .. counter)
end
