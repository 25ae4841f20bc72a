-- wrk script for bench/gateway.sh: GET KG_PATH through kongemu with
-- X-API-Key set to a random key of KG_SECRETS (the first KG_LIMIT; default
-- all). The route without the plugin gets the same header, so both
-- requests are the same size.
local secrets_file = os.getenv("KG_SECRETS") or error("KG_SECRETS is not set")
local limit = tonumber(os.getenv("KG_LIMIT") or "0")
local path = os.getenv("KG_PATH") or "/orders/42"

local keys, n = {}, 0
for line in io.lines(secrets_file) do
  n = n + 1
  keys[n] = line
  if limit > 0 and n >= limit then break end
end
if n == 0 then error("no keys in " .. secrets_file) end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local reqs = {}
function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0))
  for i = 1, n do
    reqs[i] = wrk.format("GET", path, { ["X-API-Key"] = keys[i] })
  end
end

function request()
  return reqs[math.random(n)]
end
