-- wrk script: POST /v1/execute through Vultrino. Env: VK (API key), UPSTREAM (url).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("VK")
wrk.body = '{"credential":"bench","action":"http.request","params":{"method":"GET","url":"' .. os.getenv("UPSTREAM") .. '/user"}}'

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout
  io.write(string.format("non-2xx-or-socket-errors: %d\n", errors))
end
