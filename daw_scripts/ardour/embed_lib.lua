-- Copy stembridge_lib.lua into the Ardour GUI scripts (which cannot `require` files) and
-- beside the REAPER scripts (which load it with dofile from their own folder).
-- usage (from anywhere): lua5.4 daw_scripts/ardour/embed_lib.lua
local here = (arg[0]:match("^(.*)[/\\]") or ".")
local SCRIPTS = { "stembridge_separate.lua", "stembridge_import_hook.lua" }
local BEGIN = "-- BEGIN stembridge_lib"
local END = "-- END stembridge_lib"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

--- The block that goes between the markers: the library as a local table.
local function embedded(lib)
  return "local stembridge_lib = (function ()\n" .. lib .. "end)()\n"
end

local lib = read(here .. "/stembridge_lib.lua")
for _, name in ipairs(SCRIPTS) do
  local path = here .. "/" .. name
  local text = read(path)
  local head, begin_line = text:match("^(.-)([ \t]*" .. BEGIN .. "[^\n]*\n)")
  local end_at = text:find("[ \t]*" .. END, 1)
  assert(head and end_at, name .. ": markers not found")
  local tail = text:sub(end_at)
  local out = assert(io.open(path, "wb"))
  out:write(head, begin_line, embedded(lib), tail)
  out:close()
  print("embedded stembridge_lib.lua into " .. name)
end

local reaper_copy = here .. "/../reaper/stembridge_lib.lua"
local out = assert(io.open(reaper_copy, "wb"))
out:write(lib)
out:close()
print("copied stembridge_lib.lua to " .. reaper_copy)
