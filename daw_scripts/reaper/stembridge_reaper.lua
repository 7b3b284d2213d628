-- StemBridge for REAPER: the logic of the ReaScript that needs no REAPER (runner script
-- text, reply parsing, item/take placement). Plain Lua, unit-tested with lua5.4.

local R = {}

---------------------------------------------------------------------------- quoting

function R.quote_posix(text)
  return "'" .. tostring(text):gsub("'", "'\\''") .. "'"
end

--- For a .cmd file: double quotes around, percent signs doubled (cmd expands %VAR% even
--- inside quotes). A double quote cannot occur in a Windows path, so refuse it.
function R.quote_cmd(text)
  text = tostring(text)
  assert(not text:find('"', 1, true), "a double quote cannot be passed through cmd.exe: " .. text)
  return '"' .. text:gsub("%%", "%%%%") .. '"'
end

---------------------------------------------------------------------------- request

--- Text of a small shell (or .cmd) script that asks the daemon for a separation with
--- `stembridge send --wait --json`, collects its replies in `reply_path` and renames the
--- file into place when the command has finished, so that "the file exists" means "done".
--- REAPER starts it without waiting (ExecProcess with timeout -1) and polls for the file.
--- send_args: extra `stembridge send` options, e.g. {"--port", "9011"}.
function R.runner_script(exe, source, options, reply_path, windows, send_args)
  local keys = {}
  for key in pairs(options or {}) do keys[#keys + 1] = key end
  table.sort(keys)
  local q = windows and R.quote_cmd or R.quote_posix
  local args = { q(exe), "send" }
  for _, arg in ipairs(send_args or {}) do args[#args + 1] = q(arg) end
  for _, arg in ipairs({ "--wait", "--json", "/stembridge/separate" }) do args[#args + 1] = arg end
  args[#args + 1] = q(source)
  for _, key in ipairs(keys) do
    local value = options[key]
    if type(value) == "boolean" then value = value and "1" or "0" end
    args[#args + 1] = q(key .. "=" .. tostring(value))
  end
  local part = reply_path .. ".part"
  if windows then
    return table.concat({
      "@echo off",
      table.concat(args, " ") .. " > " .. q(part) .. " 2>&1",
      "echo exit %ERRORLEVEL%>> " .. q(part),
      "move /Y " .. q(part) .. " " .. q(reply_path) .. " >nul",
    }, "\r\n") .. "\r\n"
  end
  return table.concat({
    "#!/bin/sh",
    table.concat(args, " ") .. " > " .. q(part) .. " 2>&1",
    'echo "exit $?" >> ' .. q(part),
    "mv " .. q(part) .. " " .. q(reply_path),
  }, "\n") .. "\n"
end

--- The command line REAPER runs for a runner script.
function R.runner_command(script_path, windows)
  if windows then return 'cmd.exe /C "' .. script_path .. '"' end
  return "/bin/sh " .. R.quote_posix(script_path)
end

--- Read what `stembridge send --wait --json` printed. `decode` is a JSON decoder
--- (stembridge_lib's json_decode). Returns {state = "done", job_id, manifest} or
--- {state = "error", message}.
function R.parse_reply(text, decode)
  local job_id, problems, exit_code = nil, {}, nil
  for line in text:gmatch("[^\r\n]+") do
    local code = line:match("^exit (%-?%d+)%s*$")
    if code then
      exit_code = tonumber(code)
    elseif line:sub(1, 1) == "{" then
      local message = decode(line)
      if type(message) == "table" and type(message.args) == "table" then
        if message.address == "/stembridge/queued" then
          job_id = message.args[1]
        elseif message.address == "/stembridge/done" and (job_id == nil or message.args[1] == job_id) then
          return { state = "done", job_id = message.args[1], manifest = message.args[2] }
        elseif message.address == "/stembridge/error" then
          problems[#problems + 1] = tostring(message.args[2])
        end
      end
    elseif line:match("%S") then
      problems[#problems + 1] = line
    end
  end
  if #problems == 0 then
    problems[1] = exit_code and exit_code ~= 0 and ("stembridge send exited with " .. exit_code)
      or "no /stembridge/done reply"
  end
  return { state = "error", message = table.concat(problems, "; ") }
end

---------------------------------------------------------------------------- placement

--- Item and take values for a stem item that replays exactly what the original item plays.
--- item: position, length, fade_in, fade_out, volume (seconds / gain), take: offset (seconds
--- into its source), playrate, preserve_pitch, pitch, volume. section: the section source the
--- take plays, if any ({offset = seconds into the parent file, reversed = bool}), because the
--- stems are of the parent file. Returns plan or nil, message.
function R.item_plan(item, take, section)
  if section and section.reversed then
    return nil, "reversed takes are not supported: un-reverse the item, or glue it first"
  end
  if not (take.playrate and take.playrate > 0) then return nil, "take playrate must be positive" end
  return {
    item = {
      D_POSITION = item.position, D_LENGTH = item.length, D_FADEINLEN = item.fade_in or 0,
      D_FADEOUTLEN = item.fade_out or 0, D_VOL = item.volume or 1,
    },
    take = {
      D_STARTOFFS = take.offset + (section and section.offset or 0), D_PLAYRATE = take.playrate,
      B_PPITCH = take.preserve_pitch or 0, D_PITCH = take.pitch or 0, D_VOL = take.volume or 1,
    },
  }
end

--- Why stems cannot stand in for a source of `rate` Hz and `seconds` length, or nil.
function R.mismatch(manifest, rate, seconds)
  if manifest.sample_rate ~= math.floor(rate + 0.5) then
    return string.format("stems are %d Hz, the source %d Hz", manifest.sample_rate, math.floor(rate + 0.5))
  end
  local source_frames = math.floor(seconds * rate + 0.5)
  if math.abs(manifest.frames - source_frames) > 1 then
    return string.format("stems hold %d samples, the source %d", manifest.frames, source_frames)
  end
  return nil
end

function R.track_name(track, stem)
  if track == nil or track == "" then return stem end
  return track .. " " .. stem
end

--- A per-request output folder below the daemon's output root, so a new separation of the
--- same file never overwrites stems that REAPER still has open.
function R.output_folder(project, stamp, serial, safe_name)
  return "reaper/" .. safe_name(project ~= "" and project or "unsaved") .. "/" .. stamp .. "_" .. tostring(serial)
end

return R
