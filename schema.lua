-- keygate plugin schema for Konnect and hybrid control planes.
-- Fields, types, defaults and required flags match the Go Config that
-- `keygate -dump` prints (plugin/config.go); a test loads this file with
-- luajit and compares the two, and plugin/configdoc_test.go checks the
-- fields' order and defaults against Config's tags.
local typedefs = require "kong.db.schema.typedefs"

local algorithms = {
  "HS256", "HS384", "HS512",
  "RS256", "RS384", "RS512",
  "PS256", "PS384", "PS512",
  "ES256", "ES384", "ES512",
  "EdDSA",
}

return {
  name = "keygate",
  fields = {
    { consumer = typedefs.no_consumer },
    { protocols = typedefs.protocols_http },
    { config = {
        type = "record",
        fields = {
          { route_role = { type = "string", required = true, one_of = { "manage", "enforce" } } },
          { sidecar_url = { type = "string", required = true, default = "http://127.0.0.1:8080" } },
          { sidecar_ca_file = { type = "string", required = false } },
          { sidecar_timeout_ms = { type = "integer", required = true, default = 1000, between = { 1, 10000 } } },
          { gateway_secret = { type = "string", required = false, encrypted = true, referenceable = true } },
          { jwt_algorithms = { type = "array", required = false, elements = { type = "string", one_of = algorithms } } },
          { jwt_secret = { type = "string", required = false, encrypted = true, referenceable = true } },
          { jwt_public_keys = { type = "array", required = true, default = {}, elements = { type = "string" } } },
          { jwks_url = { type = "string", required = false } },
          { jwt_issuer = { type = "string", required = false } },
          { jwt_audience = { type = "string", required = false } },
          { jwt_leeway_seconds = { type = "integer", required = true, default = 30, between = { 0, 600 } } },
          { roles_claim = { type = "string", required = true, default = "workspaces" } },
          { portal_codes = { type = "map", required = true, default = {},
              keys = { type = "string" }, values = { type = "string" } } },
          { test_mode_portals = { type = "array", required = true, default = { "PARTNER" }, elements = { type = "string" } } },
          { key_headers = { type = "array", required = true, default = { "Authorization", "X-API-Key" }, elements = { type = "string" } } },
          { required_scopes = { type = "array", required = false, elements = { type = "string" } } },
          { allowed_modes = { type = "array", required = true, default = { "LIVE" },
              elements = { type = "string", one_of = { "LIVE", "TEST" } } } },
          { hide_credentials = { type = "boolean", required = true, default = true } },
          { cache_ttl_ms = { type = "integer", required = true, default = 1000, between = { 1, 1000 } } },
          { cache_ttl_pushed_ms = { type = "integer", required = true, default = 300000, between = { 0, 3600000 } } },
          -- Failed-verification limiter (both roles); 0 turns it off.
          { failure_limit_per_minute = { type = "integer", required = true, default = 30, between = { 0, 60000 } } },
          { failure_burst = { type = "integer", required = true, default = 20, between = { 1, 10000 } } },
        },
    } },
  },
  entity_checks = {
    -- manage routes need the algorithms; enforce routes need scopes.
    { conditional = { if_field = "config.route_role", if_match = { eq = "manage" },
                      then_field = "config.jwt_algorithms", then_match = { required = true, len_min = 1 } } },
    { conditional = { if_field = "config.route_role", if_match = { eq = "enforce" },
                      then_field = "config.required_scopes", then_match = { required = true, len_min = 1 } } },
  },
}
