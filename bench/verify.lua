-- wrk script for bench/*.sh: POST /internal/v1/verify, one key per request
-- picked at random from a secrets file written by bench/keygen.
--
-- Environment:
--   KG_SECRETS         secrets file (one key a line; benchmark credentials)
--   KG_LIMIT           use only the first N keys (default: all)
--   KG_GATEWAY_SECRET  the sidecar's gateway secret
--   KG_CLIENT_IP       clientIp sent (default 10.9.200.1: the last entry of
--                      keygen's 10-entry whitelist, so the IP check scans it all)
--   KG_SCOPE           required scope (default payment:write)
--
-- Every key has the same length, so the request is the same bytes around
-- the key: built once, joined per request.

local secrets_file = os.getenv("KG_SECRETS") or error("KG_SECRETS is not set")
local limit = tonumber(os.getenv("KG_LIMIT") or "0")
local gw = os.getenv("KG_GATEWAY_SECRET") or error("KG_GATEWAY_SECRET is not set")
local ip = os.getenv("KG_CLIENT_IP") or "10.9.200.1"
local scope = os.getenv("KG_SCOPE") or "payment:write"

local keys, n = {}, 0
for line in io.lines(secrets_file) do
  n = n + 1
  keys[n] = line
  if limit > 0 and n >= limit then break end
end
if n == 0 then error("no keys in " .. secrets_file) end

local placeholder = string.rep("K", #keys[1])
local body = '{"key":"' .. placeholder .. '","clientIp":"' .. ip ..
  '","requiredScopes":["' .. scope .. '"],"allowedModes":["LIVE"]}'
local pre, post -- built in init, when wrk has set the Host header
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0))
  local template = wrk.format("POST", "/internal/v1/verify", {
    ["Authorization"] = "Bearer " .. gw,
    ["Content-Type"] = "application/json",
    ["X-Request-Id"] = "wrk",
  }, body)
  local at = template:find(placeholder, 1, true)
  pre, post = template:sub(1, at - 1), template:sub(at + #placeholder)
end

function request()
  return pre .. keys[math.random(n)] .. post
end
