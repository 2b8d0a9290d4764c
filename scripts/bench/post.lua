-- wrk script: POST an 8 KB pipeline hook with a fresh Idempotency-Key per request.
local counter = 0
local thread_id = tostring(math.random(1, 1e9))
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Gitlab-Event"] = "Pipeline Hook"
wrk.headers["X-Gitlab-Token"] = os.getenv("BENCH_TOKEN") or ""

-- Several wrk processes at once (scripts/bench-replicas) seed alike: BENCH_PREFIX tells them apart.
local prefix = os.getenv("BENCH_PREFIX") or ""

function setup(thread)
  thread:set("tid", prefix .. tostring(math.random(1, 1e9)))
end

-- BENCH_KEYS=uuid sends random version-4 UUIDs, as GitLab does: each lands on a random
-- leaf of the store's key index, where counters all land on one.
local uuid_keys = os.getenv("BENCH_KEYS") == "uuid"
local seeded = false

local function uuid()
  if not seeded then
    -- From the whole thread id, prefix included: wrk processes started together
    -- (scripts/bench-replicas) draw alike and differ only in BENCH_PREFIX.
    local seed = 0
    for c in (tid or thread_id):gmatch(".") do
      seed = (seed * 31 + c:byte()) % 2147483647
    end
    math.randomseed(seed)
    seeded = true
  end
  local r = math.random
  return string.format("%08x-%04x-4%03x-%04x-%04x%08x", r(0, 0xffffffff), r(0, 0xffff),
    r(0, 0xfff), 0x8000 + r(0, 0x3fff), r(0, 0xffff), r(0, 0xffffffff))
end

function request()
  counter = counter + 1
  if uuid_keys then
    wrk.headers["Idempotency-Key"] = uuid()
  else
    wrk.headers["Idempotency-Key"] = (tid or thread_id) .. "-" .. counter
  end
  return wrk.format(nil, "/hooks/gitlab")
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d rps=%.0f p50_ms=%.3f p99_ms=%.3f non2xx=%d errors=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
