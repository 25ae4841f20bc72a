-- Loads ../schema.lua with a tiny stand-in for kong.db.schema.typedefs and
-- prints "name<TAB>type<TAB>required<TAB>default" for every config field, in
-- order, for the Go test to compare with `keygate -dump`.
package.preload["kong.db.schema.typedefs"] = function()
  return {
    no_consumer = { type = "foreign", reference = "consumers", eq = ngx_null },
    protocols_http = { type = "set", required = true, default = { "http", "https" },
                       elements = { type = "string", one_of = { "http", "https", "grpc", "grpcs" } } },
  }
end

local schema = dofile(arg[1])
assert(schema.name == "keygate", "name")
local function show(v)
  if type(v) == "table" then
    local parts = {}
    for k, x in pairs(v) do parts[#parts + 1] = (type(k) == "number" and "" or (k .. "=")) .. show(x) end
    table.sort(parts)
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return tostring(v)
end
local seen_protocols = false
for _, f in ipairs(schema.fields) do
  local name, def = next(f)
  if name == "protocols" then
    seen_protocols = true
    assert(show(def.default) == "{http,https}", "protocols default")
  end
  if name == "config" then
    assert(def.type == "record", "config is a record")
    for _, cf in ipairs(def.fields) do
      local n, d = next(cf)
      local el = d.elements and d.elements.type or ""
      if d.type == "map" then el = d.keys.type .. ":" .. d.values.type end
      print(table.concat({ n, d.type, el, tostring(d.required == true), d.default == nil and "nil" or show(d.default) }, "\t"))
    end
  end
end
assert(seen_protocols, "protocols field")
