-- wrk script: POST uploads whose sizes cycle through a list (in KiB), to an endpoint that reads the body to the end.
--   wrk -c 16 -d 10s --latency -s upload.lua http://127.0.0.1:5000 -- /upload 500 2048 8192 20480
init = function(args)
  local path = args[1] or "/upload"
  requests = {}
  for i = 2, #args do
    local body = string.rep("u", tonumber(args[i]) * 1024)
    requests[#requests + 1] = wrk.format("POST", path, { ["Content-Type"] = "application/octet-stream" }, body)
  end
  n = 0
end

request = function()
  n = n + 1
  return requests[(n - 1) % #requests + 1]
end
