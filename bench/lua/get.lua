-- GET one route as one user: the ceiling views, or pages of a wallet's history.
--
-- Arguments (key=value after "--"): path=<the route>, token=<tsv whose first line's token
-- authenticates; optional>, pages=<file of cursors, one a line, an empty line for the first
-- page; optional: each request then asks for a random one of them as &cursor=>, and
-- common.lua's rate=, threads=, warmup=.
local bench = require("common")

local headers, pages

bench.run({
  build = function(options)
    headers = {}
    if options.token and options.token ~= "" then
      local tokens = bench.wallets(options.token)
      headers["Authorization"] = "Bearer " .. tokens[1]
    end
    if options.pages and options.pages ~= "" then
      pages = bench.lines(options.pages)
    end
  end,
  request = function(tag, options)
    local path = options.path
    if pages then
      local cursor = pages[math.random(#pages)]
      if cursor ~= "" then
        path = path .. "&cursor=" .. cursor
      end
    end
    headers["X-Request-Id"] = tag
    return wrk.format("GET", path, headers)
  end,
})
