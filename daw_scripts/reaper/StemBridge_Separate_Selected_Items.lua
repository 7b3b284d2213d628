-- @description StemBridge: separate selected items into stems, placed in line with the originals
-- @about Needs the StemBridge daemon (`stembridge serve`). See README.md beside this script.
--
-- For each selected audio item: asks the daemon (through `stembridge send`) to separate the
-- take's source file, then keeps REAPER responsive while it waits (reaper.defer) and, when the
-- stems are written, inserts one track per stem under the item's track with an item that plays
-- exactly the same part of the stem as the original plays of its source (position, length,
-- take offset, playrate, fades and volumes copied).

-- Settings ---------------------------------------------------------------------------------
local SETTINGS = {
  -- The `stembridge` command. Give the full path if REAPER does not see your shell's PATH,
  -- e.g. "/Users/me/.local/bin/stembridge" or [[C:\Users\me\AppData\Local\Programs\stembridge.exe]].
  exe = "stembridge",
  -- Extra `stembridge send` options, e.g. { "--port", "9011" } for a daemon on another port.
  send_args = {},
  options = { quality = "render", exact_sum = true },
  poll_seconds = 1.0,
  give_up_seconds = 6 * 3600,
}
----------------------------------------------------------------------------------------------

local here = ({ reaper.get_action_context() })[2]:match("^(.*[/\\])") or ""
local SB = dofile(here .. "stembridge_lib.lua")
local R = dofile(here .. "stembridge_reaper.lua")
local windows = reaper.GetOS():match("^Win") ~= nil
local sep = windows and "\\" or "/"

local function write_all(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- Collect the requests ---------------------------------------------------------------------
local project_name = reaper.GetProjectName(0, ""):gsub("%.[Rr][Pp][Pp]$", "")
local work_dir = reaper.GetProjectPath("") .. sep .. "StemBridge"
reaper.RecursiveCreateDirectory(work_dir, 0)
local stamp = os.date("%Y%m%d-%H%M%S")
local jobs = {}
local problems = {}

for i = 0, reaper.CountSelectedMediaItems(0) - 1 do
  local item = reaper.GetSelectedMediaItem(0, i)
  local take = reaper.GetActiveTake(item)
  if take and not reaper.TakeIsMIDI(take) then
    local source = reaper.GetMediaItemTake_Source(take)
    local section = nil
    local parent = reaper.GetMediaSourceParent(source)
    if parent then
      -- Section or reversed source: the stems are of the parent file; keep the section offset.
      local _, offset, _, reversed = reaper.PCM_Source_GetSectionInfo(source)
      section = { offset = offset, reversed = reversed }
      source = parent
    end
    local path = reaper.GetMediaSourceFileName(source, "")
    local plan, err = R.item_plan({
      position = reaper.GetMediaItemInfo_Value(item, "D_POSITION"),
      length = reaper.GetMediaItemInfo_Value(item, "D_LENGTH"),
      fade_in = reaper.GetMediaItemInfo_Value(item, "D_FADEINLEN"),
      fade_out = reaper.GetMediaItemInfo_Value(item, "D_FADEOUTLEN"),
      volume = reaper.GetMediaItemInfo_Value(item, "D_VOL"),
    }, {
      offset = reaper.GetMediaItemTakeInfo_Value(take, "D_STARTOFFS"),
      playrate = reaper.GetMediaItemTakeInfo_Value(take, "D_PLAYRATE"),
      preserve_pitch = reaper.GetMediaItemTakeInfo_Value(take, "B_PPITCH"),
      pitch = reaper.GetMediaItemTakeInfo_Value(take, "D_PITCH"),
      volume = reaper.GetMediaItemTakeInfo_Value(take, "D_VOL"),
    }, section)
    if not plan then
      problems[#problems + 1] = path .. ": " .. err
    else
      local track = reaper.GetMediaItem_Track(item)
      local _, track_name = reaper.GetSetMediaTrackInfo_String(track, "P_NAME", "", false)
      local name = SB.safe_name(SB.clip_name(path)) .. "_" .. stamp .. "_" .. i
      local reply = work_dir .. sep .. name .. ".reply"
      local runner = work_dir .. sep .. name .. (windows and ".cmd" or ".sh")
      local options = { output = R.output_folder(project_name, stamp, i, SB.safe_name) }
      for key, value in pairs(SETTINGS.options) do options[key] = value end
      write_all(runner, R.runner_script(SETTINGS.exe, path, options, reply, windows, SETTINGS.send_args))
      reaper.ExecProcess(R.runner_command(runner, windows), -1)
      jobs[#jobs + 1] = {
        track = track, track_name = track_name, plan = plan, reply = reply, runner = runner,
        rate = reaper.GetMediaSourceSampleRate(source), seconds = reaper.GetMediaSourceLength(source),
        started = reaper.time_precise(),
      }
    end
  end
end

if #problems > 0 then
  reaper.ShowMessageBox(table.concat(problems, "\n"), "StemBridge", 0)
end
if #jobs == 0 then
  if #problems == 0 then reaper.ShowMessageBox("Select one or more audio items first.", "StemBridge", 0) end
  return
end

-- Insert the stems when they arrive ----------------------------------------------------------
local function insert_stems(job, manifest)
  reaper.Undo_BeginBlock()
  local index = math.floor(reaper.GetMediaTrackInfo_Value(job.track, "IP_TRACKNUMBER"))  -- 1-based
  for k, stem in ipairs(manifest.stems) do
    reaper.InsertTrackAtIndex(index + k - 1, true)
    local track = reaper.GetTrack(0, index + k - 1)
    reaper.GetSetMediaTrackInfo_String(track, "P_NAME", R.track_name(job.track_name, stem.name), true)
    local item = reaper.AddMediaItemToTrack(track)
    local take = reaper.AddTakeToMediaItem(item)
    reaper.SetMediaItemTake_Source(take, reaper.PCM_Source_CreateFromFile(stem.path))
    for key, value in pairs(job.plan.item) do reaper.SetMediaItemInfo_Value(item, key, value) end
    for key, value in pairs(job.plan.take) do reaper.SetMediaItemTakeInfo_Value(take, key, value) end
    reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", stem.name, true)
  end
  reaper.Undo_EndBlock("StemBridge: insert stems", -1)
  reaper.UpdateArrange()
end

local last_poll = 0
local function poll()
  local now = reaper.time_precise()
  if now - last_poll >= SETTINGS.poll_seconds then
    last_poll = now
    local waiting = {}
    for _, job in ipairs(jobs) do
      if SB.file_exists(job.reply) then
        local reply = R.parse_reply(SB.read_file(job.reply) or "", SB.json_decode)
        local manifest, err
        if reply.state == "done" then
          manifest, err = SB.parse_manifest(SB.read_file(reply.manifest) or "", reply.manifest)
          err = err or (manifest and R.mismatch(manifest, job.rate, job.seconds))
        else
          err = reply.message
        end
        if manifest and not err then
          insert_stems(job, manifest)
          os.remove(job.reply)
          os.remove(job.runner)
        else
          reaper.ShowMessageBox("Separation failed: " .. tostring(err), "StemBridge", 0)
        end
      elseif now - job.started < SETTINGS.give_up_seconds then
        waiting[#waiting + 1] = job
      end
    end
    jobs = waiting
  end
  if #jobs > 0 then reaper.defer(poll) end
end

poll()
