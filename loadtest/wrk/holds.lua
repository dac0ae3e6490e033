-- wrk script of the issue-12 benchmark (loadtest/bench.py): holds or reads on a list of targets.
--
--   wrk -t2 -c64 -d10s --timeout 10s -s loadtest/wrk/holds.lua http://127.0.0.1:PORT \
--       -- TOKENS_FILE LINES_FILE NONCE [holds|reads] [PAUSE_MS]
--
-- TOKENS_FILE  one buyer bearer token per line (pre-minted: signing is not the server's work)
-- LINES_FILE   holds: one JSON body per line; reads: one path per line
-- NONCE        makes this run's Idempotency-Keys unique across runs against the same server
-- mode         holds (default): POST /v1/holds, a random body, a random token and a fresh
--              Idempotency-Key per request; reads: GET a random path, no token, no key
-- PAUSE_MS     each connection waits this long before each request (wrk's delay() hook): a
--              paced load of about connections x 1000 / (PAUSE_MS + latency) requests/s
--
-- At the end one line is printed: "WRK_JSON " followed by a JSON object with the requests,
-- the run's duration, counts by HTTP status (from the response() hook, exact), socket errors,
-- and latency p50/p90/p99/max in ms (wrk's histogram, over all responses whatever their status).

local threads = {}

function setup(thread)
    thread:set("thread_id", #threads + 1)
    table.insert(threads, thread)
end

local function read_lines(path)
    local lines = {}
    local file = assert(io.open(path, "r"))
    for line in file:lines() do
        if #line > 0 then
            table.insert(lines, line)
        end
    end
    file:close()
    assert(#lines > 0, path .. " is empty")
    return lines
end

function init(args)
    tokens = read_lines(args[1])
    lines = read_lines(args[2])
    nonce = args[3]
    mode = args[4] or "holds"
    pause_ms = tonumber(args[5] or "0")
    serial = 0
    statuses = {}
    math.randomseed(os.time() * 1000 + thread_id)
end

function request()
    serial = serial + 1
    if mode == "reads" then
        return wrk.format("GET", lines[math.random(#lines)])
    end
    local headers = {
        ["Content-Type"] = "application/json",
        ["Authorization"] = "Bearer " .. tokens[math.random(#tokens)],
        ["Idempotency-Key"] = nonce .. "-" .. thread_id .. "-" .. serial,
    }
    return wrk.format("POST", "/v1/holds", headers, lines[math.random(#lines)])
end

function delay()
    return pause_ms
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

local function json_object(map)
    local parts = {}
    for key, value in pairs(map) do
        table.insert(parts, string.format('"%s": %s', tostring(key), tostring(value)))
    end
    return "{" .. table.concat(parts, ", ") .. "}"
end

function done(summary, latency, requests)
    local total = {}
    for _, thread in ipairs(threads) do
        for status, count in pairs(thread:get("statuses")) do
            total[status] = (total[status] or 0) + count
        end
    end
    local errors = summary.errors
    io.write("WRK_JSON " .. json_object({
        requests = summary.requests,
        duration_s = summary.duration / 1e6,
        statuses = json_object(total),
        socket_errors = json_object({connect = errors.connect, read = errors.read, write = errors.write,
                                     timeout = errors.timeout}),
        p50_ms = latency:percentile(50) / 1000,
        p90_ms = latency:percentile(90) / 1000,
        p99_ms = latency:percentile(99) / 1000,
        max_ms = latency.max / 1000,
    }) .. "\n")
end
