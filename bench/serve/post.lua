-- POST the same single-row JSON body on every request; print the figures as one JSON line.
--
-- Run with one thread per connection (wrk -t N -c N) and the timeout in seconds as the script
-- argument (wrk ... URL -- 5). wrk 4.1 never abandons a request: one with no answer stays
-- open to the end uncounted, and a late answer counts as a "timeout" even when it is also a
-- non-2xx. So each thread (= one connection) times its own request: an answer is ok (2xx in
-- time), bad (other status in time) or late; a request still open at the end and older than
-- the timeout is hung; one younger than that was merely cut off by the end of the run.
-- p50/p99 are exact nearest-rank percentiles of the ok answers' latencies: wrk's own
-- percentiles carry its coordinated-omission correction, which for this closed loop adds
-- synthetic samples after every stall (they are printed too, as wrk_p50_us/wrk_p99_us).
--
-- Many models: a second argument, comma-separated paths (wrk ... URL -- 5 /a,/b,/c), makes
-- each connection rotate through them request by request, connection k starting at path k,
-- so that any number of connections spreads its load evenly over the paths.
--
-- Another protocol: a third argument replaces the body (wrk ... URL -- 5 "" '{"inputs": ...}'),
-- e.g. the V2 inference body for MLServer and Triton; an empty second one keeps the URL's path.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local clock = ffi.new("bench_timespec")

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9
end

wrk.method = "POST"
wrk.body = '{"rows": [[6, 148, 72, 35, 0, 33.6, 0.627, 50]]}'
wrk.headers["Content-Type"] = "application/json"

-- Globals, not locals: done() reads them from each thread with thread:get().
ok, bad, late, started, timeout = 0, 0, 0, nil, 5
latencies, codes = {}, {}
first = 1
local payloads, next_payload = {}, 1
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("first", #threads)
end

function init(args)
  timeout = tonumber(args[1]) or 5
  if args[3] and args[3] ~= "" then wrk.body = args[3] end
  for path in string.gmatch(args[2] or "", "[^,]+") do
    payloads[#payloads + 1] = wrk.format(nil, path)
  end
  if #payloads == 0 then payloads[1] = wrk.format() end
  next_payload = (first - 1) % #payloads + 1
end

function request()
  started = now()
  local payload = payloads[next_payload]
  next_payload = next_payload % #payloads + 1
  return payload
end

function response(status, headers, body)
  local elapsed = now() - started
  if elapsed > timeout then
    late = late + 1
  elseif status >= 200 and status < 300 then
    ok = ok + 1
    latencies[ok] = elapsed
  else
    bad = bad + 1
    codes[status] = (codes[status] or 0) + 1
  end
  started = nil
end

local function percentile(sorted, p)
  if #sorted == 0 then return 0 end
  return sorted[math.max(1, math.ceil(p / 100 * #sorted))] * 1e6
end

function done(summary, latency, requests)
  local limit = threads[1]:get("timeout")
  local totals = { ok = 0, bad = 0, late = 0, hung = 0, cut = 0 }
  local all, bad_codes = {}, {}
  local ended = now()
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("codes")) do
      bad_codes[code] = (bad_codes[code] or 0) + count
    end
    for _, value in ipairs(thread:get("latencies")) do all[#all + 1] = value end
    totals.ok = totals.ok + thread:get("ok")
    totals.bad = totals.bad + thread:get("bad")
    totals.late = totals.late + thread:get("late")
    local open = thread:get("started")
    if open ~= nil then
      if ended - open > limit then totals.hung = totals.hung + 1 else totals.cut = totals.cut + 1 end
    end
  end
  table.sort(all)
  local shown = {}
  for code, count in pairs(bad_codes) do
    shown[#shown + 1] = string.format('"%d": %d', code, count)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "wrk_p50_us": %d, "wrk_p99_us": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, ' ..
    '"ok": %d, "bad": %d, "bad_codes": {%s}, "late": %d, "hung": %d, "cut": %d}\n',
    summary.requests, summary.duration, percentile(all, 50), percentile(all, 99),
    percentile(all, 100), latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout,
    totals.ok, totals.bad, table.concat(shown, ", "), totals.late, totals.hung, totals.cut))
end
