-- Replays a deck of prepared HTTP requests over wrk's keep-alive connections, round robin, and
-- prints one machine-readable result line when wrk is done.
--
-- The deck file (path in BENCH_DECK) is written by bench/load.py:
--   line 1:    METHOD
--   then:      "H <name>: <value>"  one header sent with every request
--   then:      "R <path>\t<body>"   one request (the body may be empty; never holds a tab)
-- Every request is formatted once, in init(), so the load generator spends nothing per request
-- but sending bytes: the /token deck carries assertions signed beforehand, never in Lua.
--
-- Non-2xx responses are counted exactly here (wrk itself counts only status >= 400), and the
-- first one seen is kept so the bench can say what went wrong.

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

local requests = {}
local index = 0
non2xx = 0
first_bad = ""

function init(_args)
  local path = os.getenv("BENCH_DECK")
  local file = assert(io.open(path, "r"), "cannot open deck " .. tostring(path))
  local method = file:read("*l")
  local headers = {}
  local specs = {}
  for line in file:lines() do
    local kind, rest = line:sub(1, 1), line:sub(3)
    if kind == "H" then
      local name, value = rest:match("^([^:]+):%s*(.*)$")
      headers[name] = value
    elseif kind == "R" then
      local target, body = rest:match("^([^\t]*)\t(.*)$")
      table.insert(specs, { target, body })
    end
  end
  file:close()
  for i, spec in ipairs(specs) do
    local body = spec[2]
    if body == "" then
      body = nil
    end
    requests[i] = wrk.format(method, spec[1], headers, body)
  end
  -- Threads start at different places in the deck, so they do not send the same request.
  index = ((id or 1) - 1) * 7919 % #requests
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function response(status, _headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_bad == "" then
      first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 300)
    end
  end
end

function done(summary, latency, _requests)
  local bad = 0
  local sample = ""
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non2xx") or 0)
    local seen = thread:get("first_bad") or ""
    if sample == "" then
      sample = seen
    end
  end
  sample = sample:gsub("[%c\"\\]", " ")
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, '
      .. '"p99_us": %d, "max_us": %d, "non2xx": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "timeouts": %d, "first_bad": "%s"}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    bad, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, sample
  ))
end
