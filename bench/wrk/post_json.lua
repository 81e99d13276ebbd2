-- wrk script for bench/serving.py: POST JSON bodies, one per line of a file, cycled per connection.
--
--   wrk -t1 -c32 -d60s --timeout 30s -s bench/wrk/post_json.lua http://127.0.0.1:3000/recommend \
--       -- bodies.jsonl [bearer-token]
--
-- The bodies are cycled across all connections of a wrk thread (one Lua state per thread), so
-- concurrent requests carry different bodies. No response() hook: it would make wrk hand every
-- response to Lua, client CPU taken from the server; wrk counts status >= 400 itself (errors.status).
-- done() prints one JSON line (prefixed "WRK_JSON ") that the benchmark
-- reads: requests, duration, socket and status errors, latency percentiles in microseconds.

local bodies = {}
local next_body = 1

function init(args)
  local path = args[1]
  if path == nil then
    error("give the bodies file after --: wrk ... -s post_json.lua URL -- bodies.jsonl [token]")
  end
  for line in io.lines(path) do
    if #line > 0 then
      bodies[#bodies + 1] = line
    end
  end
  if #bodies == 0 then
    error(path .. ": no JSON bodies (one per line expected)")
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if args[2] ~= nil and #args[2] > 0 then
    wrk.headers["Authorization"] = "Bearer " .. args[2]
  end
end

function request()
  local body = bodies[next_body]
  next_body = next_body % #bodies + 1
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
end
