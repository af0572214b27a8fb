-- wrk script: HTTP/1.1 pipelining, TechEmpower style. Every request() call sends <depth> requests back to back on one
-- connection; wrk counts each response.
--   wrk -c 256 -d 10s --latency -s pipeline.lua http://127.0.0.1:5000 -- /plaintext 16
init = function(args)
  local path = args[1] or "/plaintext"
  local depth = tonumber(args[2] or 16)
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format("GET", path)
  end
  req = table.concat(r)
end

request = function()
  return req
end
