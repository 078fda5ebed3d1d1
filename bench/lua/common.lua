-- What every wrk script of bench/ shares (bench/load.py runs them): reading the arguments,
-- tagging requests, timing answers, pacing an open loop, and the JSON report done() prints.
--
-- Timing. Every request carries a tag, "t<thread>-<n>", that comes back with its answer: in
-- the X-Request-Id header, which the service and the ceiling views echo, or in a transfer's
-- note, which the transfer answer repeats. So each answer is matched with its own request and
-- timed from when that request was sent (closed loop) or due (open loop) to when its answer
-- was complete. wrk's own latency statistics are not used: wrk 4 adds synthetic samples to
-- them after the run (stats_correct), which a closed-loop percentile must not contain.
-- Latencies go into a histogram of logarithmic buckets (2% wide); bench/load.py reads its
-- percentiles from there.
--
-- Open loop (rate > 0): wrk itself only runs closed loops, so each thread keeps a schedule of
-- send times, one every threads/rate seconds. A connection that is free books the next slot
-- in delay() and waits for it; when every connection is busy the schedule does not wait, so a
-- request that leaves late is still timed from its slot (no coordinated omission). The first
-- request of each connection goes out at once, before any delay(); answers to requests due in
-- the first `warmup` seconds are not counted.
--
-- Answers that are not 2xx are counted by status, with the first such body kept for the
-- report; bench fails the run on any of them.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
int clock_gettime(int clk_id, bench_timespec_t *tp);
]]
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec_t")

local M = {}

function M.now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000000 + math.floor(tonumber(timespec.tv_nsec) / 1000)
end

function M.lines(path)
  local out = {}
  for line in io.lines(path) do
    out[#out + 1] = line
  end
  return out
end

-- "token<TAB>handle" lines (bench/seed.py) as two lists.
function M.wallets(path)
  local tokens, handles = {}, {}
  for _, line in ipairs(M.lines(path)) do
    local token, handle = line:match("^([^\t]+)\t(.+)$")
    tokens[#tokens + 1] = token
    handles[#handles + 1] = handle
  end
  return tokens, handles
end

local function quote(text)
  return '"' .. (text:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end)) .. '"'
end

local function encode(value)
  local kind = type(value)
  if kind == "table" then
    local parts = {}
    for k, v in pairs(value) do
      parts[#parts + 1] = quote(tostring(k)) .. ":" .. encode(v)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif kind == "string" then
    return quote(value)
  elseif kind == "number" then
    return string.format("%d", value)
  end
  return "null"
end

local BUCKETS_PER_E = 50 -- bucket b holds latencies in [e^(b/50), e^((b+1)/50)) microseconds

-- Thread globals, read by done() through thread:get().
hist, statuses, counted, untagged, first_error = {}, {}, 0, 0, ""

local threads = {}
local options, pending, sequence, slots = {}, {}, 0, {}
local slot_head, slot_tail, next_slot, interval_us, counted_from = 1, 0, nil, 0, 0
local make_request

-- key=value arguments after wrk's "--".
local function parse(args)
  local parsed = {}
  for _, arg in ipairs(args) do
    local key, value = arg:match("^([%w_]+)=(.*)$")
    if key then
      parsed[key] = value
    end
  end
  return parsed
end

local function book_slot()
  local now = M.now_us()
  if next_slot == nil then
    next_slot = now
  end
  local slot = next_slot
  next_slot = next_slot + interval_us
  slot_tail = slot_tail + 1
  slots[slot_tail] = slot
  return slot - now
end

local function take_slot()
  if slot_head > slot_tail then
    return M.now_us()
  end
  local slot = slots[slot_head]
  slots[slot_head] = nil
  slot_head = slot_head + 1
  return slot
end

-- The per-script part: `build(options)` once per thread, then `request(tag, options)` must
-- return a request (wrk.format) that carries `tag` as described above.
function M.run(script)
  function setup(thread)
    thread:set("thread_index", #threads + 1)
    threads[#threads + 1] = thread
  end

  function init(args)
    options = parse(args)
    math.randomseed(thread_index * 7919 + math.floor(M.now_us() % 1000003))
    script.build(options)
    make_request = script.request
    local rate = tonumber(options.rate or "0")
    counted_from = M.now_us() + 1000000 * tonumber(options.warmup or "0")
    if rate > 0 then
      interval_us = 1000000 * tonumber(options.threads) / rate
      function delay()
        -- wrk waits whole milliseconds: round up, so no request leaves before its slot.
        local wait = book_slot()
        return wait > 0 and math.ceil(wait / 1000) or 0
      end
    end
  end

  function request()
    sequence = sequence + 1
    local tag = "t" .. thread_index .. "-" .. sequence
    pending[tag] = take_slot()
    return make_request(tag, options)
  end

  function response(status, headers, body)
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
    if (status < 200 or status > 299) and first_error == "" then
      first_error = status .. " " .. body:sub(1, 400)
    end
    local tag = headers["X-Request-Id"]
    local started = tag and pending[tag]
    if not started then
      tag = body:match('"note":"(t%d+%-%d+)"')
      started = tag and pending[tag]
    end
    if not started then
      untagged = untagged + 1
      return
    end
    pending[tag] = nil
    if started >= counted_from then
      local latency = M.now_us() - started
      local bucket = math.floor(math.log(math.max(latency, 1)) * BUCKETS_PER_E)
      hist[bucket] = (hist[bucket] or 0) + 1
      counted = counted + 1
    end
  end

  function done(summary, latency, requests)
    local report = {
      duration_us = summary.duration,
      requests = summary.requests,
      errors = summary.errors,
      statuses = {},
      hist = {},
      counted = 0,
      untagged = 0,
      first_error = "",
      buckets_per_e = BUCKETS_PER_E,
    }
    for _, thread in ipairs(threads) do
      for k, v in pairs(thread:get("statuses")) do
        report.statuses[k] = (report.statuses[k] or 0) + v
      end
      for k, v in pairs(thread:get("hist")) do
        report.hist[k] = (report.hist[k] or 0) + v
      end
      report.counted = report.counted + thread:get("counted")
      report.untagged = report.untagged + thread:get("untagged")
      if report.first_error == "" then
        report.first_error = thread:get("first_error")
      end
    end
    io.write("BENCH_JSON ", encode(report), "\n")
  end
end

return M
