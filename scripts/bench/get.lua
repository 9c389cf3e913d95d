-- A plain GET: no key, no body; the gateway passes it through without the store.
wrk.method = "GET"
wrk.path = "/deployments"
