-- Every request carries the same key: after the first, all are replays.
wrk.method = "POST"
wrk.path = "/deployments"
wrk.body = '{"ref":"v1"}'
wrk.headers["Idempotency-Key"] = "bench-repeated"
wrk.headers["Content-Type"] = "application/json"
