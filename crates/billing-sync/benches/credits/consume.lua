-- wrk's side of `./scripts/bench --bench credits`: consumes of 1 credit over HTTP, each with its
-- own idempotency key, on organizations drawn from `org_0000` up to the spread.
--   wrk -t2 -c64 -d5s -s consume.lua http://127.0.0.1:PORT/api/v1/credits/consume -- SPREAD TAG KEY
-- `done` prints one line the bench reads: requests, microseconds, failures (anything but a 200,
-- or a socket error), p50 and p99 latency in microseconds.

local threads = {}

function setup(thread)
  thread:set("thread_number", #threads)
  table.insert(threads, thread)
end

function init(args)
  spread = tonumber(args[1])
  tag = args[2]
  sent = 0
  refused = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[3]
end

function request()
  sent = sent + 1
  local body = string.format(
    '{"organization_id":"org_%04d","amount":1,"idempotency_key":"%s-%d-%d"}',
    math.random(0, spread - 1), tag, thread_number, sent)
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status ~= 200 then
    refused = refused + 1
  end
end

function done(summary, latency, requests)
  local failed = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout + summary.errors.status
  for _, thread in ipairs(threads) do
    failed = failed + thread:get("refused")
  end
  io.write(string.format("wrk-figures %d %d %d %d %d\n", summary.requests, summary.duration,
    failed, latency:percentile(50), latency:percentile(99)))
end
