-- Headless (ardour7-lua): open or create a session and add stereo/mono audio tracks.
-- usage: ardour7-lua tracks.lua SESSION_DIR NAME RATE CHANNELS TRACK [TRACK...]
local dir, name, rate, channels = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4])
assert(dir and name and rate and channels, "usage: tracks.lua SESSION_DIR NAME RATE CHANNELS TRACK...")

-- The dummy backend needs no sound card, so this runs on CI machines.
AudioEngine:set_backend("None (Dummy)", "", "")
-- Decide up front: a failed load_session leaves the engine so that new tracks are not
-- auto-connected to the master bus, and an unconnected track renders silence.
local existing_file = io.open(dir .. "/" .. name .. ".ardour", "r")
local s
if existing_file then
  existing_file:close()
  s = load_session(dir, name)
else
  s = create_session(dir, name, rate)
end
assert(s, "cannot open or create the session in " .. dir)

local existing = {}
for route in s:get_tracks():iter() do existing[route:name()] = true end
for i = 5, #arg do
  if not existing[arg[i]] then
    local added = s:new_audio_track(channels, 2, nil, 1, arg[i],
      ARDOUR.PresentationInfo.max_order, ARDOUR.TrackMode.Normal, true)
    assert(added:size() == 1, "could not add track " .. arg[i])
    -- Ardour connects new tracks to the master bus from a background thread, which may not
    -- have run before the session is saved; connect here so the track is always heard.
    local track = added:front()
    local master_in = s:master_out():input()
    for n = 0, track:output():n_ports():n_audio() - 1 do
      local port = track:output():audio(n)
      if not port:connected() then
        track:output():connect(port, master_in:audio(n):name(), nil)
      end
    end
  end
end
s:save_state("")
close_session()
quit()
