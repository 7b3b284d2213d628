-- Headless (ardour7-lua): run the import hook's placement step on stems that were put into
-- the session whole-file at IMPORT_AT (as Editor:do_import leaves them), using the very
-- functions the GUI hook uses from daw_scripts/ardour/stembridge_lib.lua.
-- usage: ardour7-lua place.lua SESSION_DIR NAME LIB POSITION START LENGTH IMPORT_AT TRACK...
local dir, name, lib_path = arg[1], arg[2], arg[3]
local position, start, length, import_at = tonumber(arg[4]), tonumber(arg[5]), tonumber(arg[6]), tonumber(arg[7])
local SB = dofile(lib_path)

AudioEngine:set_backend("None (Dummy)", "", "")
local s = load_session(dir, name)
assert(s, "cannot load session " .. tostring(name) .. " in " .. tostring(dir))

local plan = SB.region_plan(position, start, length, import_at)
for i = 8, #arg do
  local route = s:route_by_name(arg[i])
  assert(route and not route:isnil(), "no track " .. arg[i])
  local count = 0
  for region in route:to_track():playlist():region_list():iter() do
    -- Idempotent, so a retried run (after a hang past the save) does not trim twice.
    local done = region:position():samples() == position and region:start():samples() == start
      and region:length():samples() == length
    if not done then SB.apply_region_plan(region, plan) end
    count = count + 1
  end
  assert(count == 1, "expected one imported region on " .. arg[i] .. ", found " .. count)
  print("placed\t" .. arg[i])
end
s:save_state("")
close_session()
quit()
