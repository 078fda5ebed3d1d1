-- POST transfers (API.md's /wallet/transfer body) from random wallets: to another random
-- wallet (uniform P2P), or all to one wallet (recipient=<handle>: the hot merchant).
--
-- Arguments (key=value after "--"): wallets=<tsv of token TAB handle>, path=<the route>,
-- pin=<every seeded wallet's PIN>, key=<prefix of this run's Idempotency-Keys>,
-- recipient=<handle> (optional), and common.lua's rate=, threads=, warmup=.
-- Each request authenticates as its sender, carries a unique Idempotency-Key (the prefix and
-- the request's tag) and puts its tag in the note, where the answer repeats it.
local bench = require("common")

local tokens, handles, recipient, headers

bench.run({
  build = function(options)
    tokens, handles = bench.wallets(options.wallets)
    recipient = options.recipient ~= "" and options.recipient or nil
    headers = { ["Content-Type"] = "application/json" }
  end,
  request = function(tag, options)
    local n = #tokens
    local sender = math.random(n)
    local to = recipient
    if to == nil then
      local other = math.random(n - 1)
      if other >= sender then
        other = other + 1
      end
      to = handles[other]
    end
    headers["Authorization"] = "Bearer " .. tokens[sender]
    headers["Idempotency-Key"] = options.key .. tag
    headers["X-Request-Id"] = tag
    local body = '{"to":"' .. to .. '","amount":1,"pin":"' .. options.pin .. '","note":"' .. tag .. '"}'
    return wrk.format("POST", options.path, headers, body)
  end,
})
