-- Headless (ardour7-lua): the sending half of the "StemBridge: Separate Selected Regions"
-- action, for every region of one track (instead of the GUI selection), through the same
-- stembridge_lib functions: write the region's audio, send /stembridge/separate over
-- ARDOUR.LuaOSC, print the pending entry the import hook would wait for.
-- usage: ardour7-lua send_request.lua SESSION_DIR NAME LIB TRACK PORT STEMS_ROOT
local dir, name, lib_path, track_name, port, stems_root = arg[1], arg[2], arg[3], arg[4], tonumber(arg[5]), arg[6]
local SB = dofile(lib_path)

AudioEngine:set_backend("None (Dummy)", "", "")
local s = load_session(dir, name)
assert(s, "cannot load session " .. tostring(name) .. " in " .. tostring(dir))

local route = s:route_by_name(track_name)
assert(route and not route:isnil(), "no track " .. track_name)
local settings = { host = "127.0.0.1", port = port, stems_root = stems_root,
                   options = { quality = "preview", exact_sum = true } }
local serial = 0
for region in route:to_track():playlist():region_list():iter() do
  local entry, request = SB.request_separation(s, region, track_name, settings, serial)
  print("pending\t" .. SB.format_pending(entry))
  print("request\t" .. request)
  serial = serial + 1
end
close_session()
quit()
