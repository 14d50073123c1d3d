-- wrk script for the serving benchmark: POST one image to /denoise as multipart/form-data.
-- The upload comes from $SERVE_BENCH_IMAGE, the model field from $SERVE_BENCH_MODEL (left out if empty);
-- Accept: image/png asks for the PNG alone. The request is built once here, at load, so wrk sends it
-- as a static request (a request() function would cost wrk time on every call).
local path = os.getenv("SERVE_BENCH_IMAGE")
local model = os.getenv("SERVE_BENCH_MODEL") or ""
local file = assert(io.open(path, "rb"), "cannot open SERVE_BENCH_IMAGE: " .. tostring(path))
local image = file:read("*a")
file:close()

local boundary = "----dae-bench-7d3f9a"
local parts = {}
if model ~= "" then
  table.insert(parts, "--" .. boundary .. "\r\n" ..
    'Content-Disposition: form-data; name="model"\r\n\r\n' .. model .. "\r\n")
end
table.insert(parts, "--" .. boundary .. "\r\n" ..
  'Content-Disposition: form-data; name="file"; filename="digit.png"\r\n' ..
  "Content-Type: image/png\r\n\r\n" .. image .. "\r\n")
table.insert(parts, "--" .. boundary .. "--\r\n")

wrk.method = "POST"
wrk.body = table.concat(parts)
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
wrk.headers["Accept"] = "image/png"
