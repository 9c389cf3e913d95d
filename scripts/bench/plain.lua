wrk.method = "POST"
wrk.path = "/deployments"
wrk.body = '{"ref":"v1"}'
wrk.headers["Content-Type"] = "application/json"
