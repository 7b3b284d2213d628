-- Headless (ardour7-lua): print every region of every track; optionally clear one track's
-- playlist and save, so that a render of the session no longer contains it.
-- usage: ardour7-lua inspect.lua SESSION_DIR NAME [TRACK_TO_CLEAR]
-- Output lines: "region<TAB>track<TAB>position<TAB>length<TAB>start<TAB>natural_position<TAB>path"
-- (all in samples), so a test can compare Ardour's own view of the timeline.
local dir, name, clear = arg[1], arg[2], arg[3]
AudioEngine:set_backend("None (Dummy)", "", "")
local s = load_session(dir, name)
assert(s, "cannot load session " .. tostring(name) .. " in " .. tostring(dir))

for route in s:get_tracks():iter() do
  local track = route:to_track()
  for region in track:playlist():region_list():iter() do
    local source = region:source(0)
    print(string.format("region\t%s\t%d\t%d\t%d\t%d\t%s", route:name(),
      region:position():samples(), region:length():samples(), region:start():samples(),
      source:natural_position():samples(), source:to_filesource():path()))
  end
  if clear and route:name() == clear then
    -- Removing the regions takes effect at once; a mute control change is queued for the
    -- process thread and would not yet be in the saved state.
    local playlist = track:playlist()
    local doomed = {}
    for region in playlist:region_list():iter() do doomed[#doomed + 1] = region end
    for _, region in ipairs(doomed) do playlist:remove_region(region) end
    print("cleared\t" .. clear)
  end
end
if clear then s:save_state("") end
close_session()
quit()
