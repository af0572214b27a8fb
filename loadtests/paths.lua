-- wrk script: GET requests that cycle through a list of paths, and optionally end a connection every N requests
-- (the request carries "Connection: close"; Kestrel answers and closes, wrk opens a new connection).
--   wrk -c 256 -d 10s --latency -s paths.lua http://127.0.0.1:5000 -- <close every N, 0 = never> <path> [<path>...]
-- The count is per wrk thread (run with -t1), over all its connections: with N = 25 a connection serves about 25
-- requests on average before it is renewed.
init = function(args)
  close_every = tonumber(args[1] or 0)
  paths = {}
  for i = 2, #args do
    paths[#paths + 1] = args[i]
  end
  if #paths == 0 then
    paths[1] = "/plaintext"
  end
  keep = {}
  close = {}
  for i, p in ipairs(paths) do
    keep[i] = wrk.format("GET", p)
    close[i] = wrk.format("GET", p, { ["Connection"] = "close" })
  end
  n = 0
end

request = function()
  n = n + 1
  local i = (n - 1) % #paths + 1
  if close_every > 0 and n % close_every == 0 then
    return close[i]
  end
  return keep[i]
end
