-- Every request carries a key no other request has.
local threads = 0
function setup(thread) threads = threads + 1; thread:set("id", threads) end
function init() prefix = string.format("%d-%d-%d", os.time(), math.random(1, 1e9), id) ; n = 0 end
function request()
  n = n + 1
  return wrk.format("POST", "/deployments", {["Idempotency-Key"] = prefix .. "-" .. n, ["Content-Type"] = "application/json"}, '{"ref":"v1"}')
end
