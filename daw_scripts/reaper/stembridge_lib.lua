-- StemBridge helpers for Ardour Lua scripts: the parts that need no Ardour (manifest
-- parsing, paths, the OSC request, position math) plus two small functions that apply them
-- through Ardour's API. Plain Lua 5.3 (Ardour's interpreter); tested with lua5.4.
--
-- Ardour's GUI scripts cannot `require` or `dofile`, so stembridge_separate.lua and
-- stembridge_import_hook.lua carry a copy of this file between "BEGIN/END stembridge_lib"
-- markers. Edit this file, then run `lua5.4 daw_scripts/ardour/embed_lib.lua` to refresh
-- the copies; a test fails when they differ.

local M = {}

M.MANIFEST = "stems.json"
M.PENDING = "stembridge_pending.tsv"
M.DEFAULT_PORT = 9010

---------------------------------------------------------------------------- JSON
-- A small, strict JSON reader: enough for stems.json (objects, arrays, strings with
-- escapes, numbers, true/false/null). null decodes to M.null so that keys stay visible.

M.null = setmetatable({}, { __tostring = function() return "null" end })

local function utf8_char(code)
  if utf8 and utf8.char then return utf8.char(code) end
  return "?"
end

local function decode_error(text, pos, what)
  return error({ json = string.format("invalid JSON at byte %d: %s", pos, what) }, 0)
end

local function skip_ws(text, pos)
  local _, last = text:find("^[ \t\r\n]*", pos)
  return last + 1
end

local decode_value

local function decode_string(text, pos)
  -- pos is at the opening quote
  local parts, i = {}, pos + 1
  while true do
    local c = text:sub(i, i)
    if c == "" then decode_error(text, i, "unterminated string") end
    if c == '"' then return table.concat(parts), i + 1 end
    if c == "\\" then
      local e = text:sub(i + 1, i + 1)
      local simple = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
      if simple[e] then
        parts[#parts + 1] = simple[e]
        i = i + 2
      elseif e == "u" then
        local hex = text:sub(i + 2, i + 5)
        if not hex:match("^%x%x%x%x$") then decode_error(text, i, "bad \\u escape") end
        local code = tonumber(hex, 16)
        i = i + 6
        if code >= 0xD800 and code <= 0xDBFF then
          local low = text:match("^\\u(%x%x%x%x)", i)
          if not low then decode_error(text, i, "lone surrogate") end
          code = 0x10000 + (code - 0xD800) * 0x400 + (tonumber(low, 16) - 0xDC00)
          i = i + 6
        end
        parts[#parts + 1] = utf8_char(code)
      else
        decode_error(text, i, "bad escape")
      end
    elseif c:byte() < 32 then
      decode_error(text, i, "control character in string")
    else
      local run_end = text:find('["\\%c]', i) or (#text + 1)
      parts[#parts + 1] = text:sub(i, run_end - 1)
      i = run_end
    end
  end
end

decode_value = function(text, pos)
  pos = skip_ws(text, pos)
  local c = text:sub(pos, pos)
  if c == "{" then
    local object = {}
    pos = skip_ws(text, pos + 1)
    if text:sub(pos, pos) == "}" then return object, pos + 1 end
    while true do
      if text:sub(pos, pos) ~= '"' then decode_error(text, pos, "expected a key") end
      local key
      key, pos = decode_string(text, pos)
      pos = skip_ws(text, pos)
      if text:sub(pos, pos) ~= ":" then decode_error(text, pos, "expected ':'") end
      object[key], pos = decode_value(text, pos + 1)
      pos = skip_ws(text, pos)
      local sep = text:sub(pos, pos)
      if sep == "}" then return object, pos + 1 end
      if sep ~= "," then decode_error(text, pos, "expected ',' or '}'") end
      pos = skip_ws(text, pos + 1)
    end
  elseif c == "[" then
    local array = {}
    pos = skip_ws(text, pos + 1)
    if text:sub(pos, pos) == "]" then return array, pos + 1 end
    while true do
      array[#array + 1], pos = decode_value(text, pos)
      pos = skip_ws(text, pos)
      local sep = text:sub(pos, pos)
      if sep == "]" then return array, pos + 1 end
      if sep ~= "," then decode_error(text, pos, "expected ',' or ']'") end
      pos = pos + 1
    end
  elseif c == '"' then
    return decode_string(text, pos)
  elseif text:find("^true", pos) then
    return true, pos + 4
  elseif text:find("^false", pos) then
    return false, pos + 5
  elseif text:find("^null", pos) then
    return M.null, pos + 4
  end
  local number = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  if number and number ~= "" and number ~= "-" then
    local value = math.tointeger(tonumber(number)) or tonumber(number)
    if value == nil then decode_error(text, pos, "bad number") end
    return value, pos + #number
  end
  decode_error(text, pos, "unexpected " .. (c == "" and "end of text" or ("'" .. c .. "'")))
end

--- Decode JSON text; returns value or nil, message.
function M.json_decode(text)
  local ok, value, pos = pcall(decode_value, text, 1)
  if not ok then
    if type(value) == "table" and value.json then return nil, value.json end
    error(value, 0)
  end
  if skip_ws(text, pos) <= #text then return nil, "invalid JSON: trailing text at byte " .. pos end
  return value
end

---------------------------------------------------------------------------- paths

--- Folder part of a path ("" for a bare name); both separators, since Windows paths arrive too.
function M.dirname(path)
  return path:match("^(.*)[/\\][^/\\]*$") or ""
end

function M.basename(path)
  return path:match("([^/\\]*)$")
end

--- File name without its extension ("song.take2.wav" -> "song.take2").
function M.clip_name(path)
  local base = M.basename(path)
  return base:match("^(.+)%.[^.]*$") or base
end

function M.file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

--- A whole file's bytes, or nil when it cannot be opened.
function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

function M.join(folder, name)
  if folder == "" then return name end
  local sep = folder:find("\\", 1, true) and not folder:find("/", 1, true) and "\\" or "/"
  if folder:sub(-1) == sep then return folder .. name end
  return folder .. sep .. name
end

--- Where the stems of `source` land when the request asks for output folder `output`:
--- <output>/<clip>/stems.json (StemBridge's default name template).
function M.manifest_path(output, source)
  return M.join(M.join(output, M.clip_name(source)), M.MANIFEST)
end

--- A file-name-safe version of `text`: letters, digits, '-' and '_' only, so the daemon's
--- own sanitising leaves it unchanged and the manifest path can be predicted.
function M.safe_name(text)
  local name = tostring(text):gsub("[^%w%-_]+", "_"):gsub("^_+", ""):gsub("_+$", "")
  if name == "" then name = "clip" end
  return name:sub(1, 80)
end

---------------------------------------------------------------------------- WAV
-- The action hands the daemon the region's audio as one interleaved 32-bit float WAV with a
-- BWF `bext` chunk, because Ardour keeps every channel of a region in its own mono file.

local BEXT_SIZE = 602

--- RIFF/WAVE header (fmt, bext with TimeReference, data chunk header) for `frames` frames of
--- 32-bit float audio; the sample bytes follow it directly.
function M.wav_header(rate, channels, frames, time_reference)
  local data_size = frames * channels * 4
  local fmt = string.pack("<c4I4I2I2I4I4I2I2", "fmt ", 16, 3, channels, rate, rate * channels * 4, channels * 4, 32)
  local reference = time_reference or 0
  -- bext: Description 256, Originator 32, OriginatorReference 32, Date 10, Time 8,
  -- TimeReference (low, high u32) at 338, Version u16 at 346, then zeros to 602.
  local bext_body = string.pack("<c256c32c32c10c8I4I4I2", "StemBridge request", "StemBridge Ardour", "",
    "", "", reference % 4294967296, reference // 4294967296, 1)
  bext_body = bext_body .. string.rep("\0", BEXT_SIZE - #bext_body)
  local bext = string.pack("<c4I4", "bext", BEXT_SIZE) .. bext_body
  local data = string.pack("<c4I4", "data", data_size)
  local riff_size = 4 + #fmt + #bext + #data + data_size
  return string.pack("<c4I4c4", "RIFF", riff_size, "WAVE") .. fmt .. bext .. data
end

--- Interleave `count` frames from per-channel arrays (1-based Lua tables) as float32 bytes.
function M.pack_frames(columns, count)
  local channels = #columns
  local values, n = {}, 0
  for i = 1, count do
    for c = 1, channels do
      n = n + 1
      values[n] = columns[c][i]
    end
  end
  local parts = {}
  -- string.pack takes its values as arguments: pack in slices to stay far from stack limits.
  for first = 1, n, 1024 do
    local last = math.min(first + 1023, n)
    parts[#parts + 1] = string.pack("<" .. string.rep("f", last - first + 1), table.unpack(values, first, last))
  end
  return table.concat(parts)
end

---------------------------------------------------------------------------- manifest

--- Parse stems.json text into {job_id, sample_rate, frames, channels, time_reference (nil when
--- null), stems = {{name=, file=}, ...} in a stable order, folder}. Returns nil, message on
--- anything a script could not safely import.
function M.parse_manifest(text, manifest_path)
  local data, err = M.json_decode(text)
  if not data then return nil, err end
  if type(data) ~= "table" then return nil, "stems.json is not an object" end
  if data.version ~= 1 then return nil, "unsupported stems.json version " .. tostring(data.version) end
  for _, key in ipairs({ "sample_rate", "frames", "channels" }) do
    if math.type(data[key]) ~= "integer" or data[key] <= 0 then
      return nil, "stems.json: " .. key .. " must be a positive integer"
    end
  end
  if type(data.stems) ~= "table" or next(data.stems) == nil then return nil, "stems.json lists no stems" end
  local folder = manifest_path and M.dirname(manifest_path) or ""
  local stems = {}
  for name, file in pairs(data.stems) do
    if type(file) ~= "string" or file == "" or file:find("..", 1, true) then
      return nil, "stems.json: bad file name for stem " .. tostring(name)
    end
    stems[#stems + 1] = { name = name, file = file, path = M.join(folder, file) }
  end
  table.sort(stems, function(a, b) return a.name < b.name end)
  local reference = data.time_reference
  if reference == M.null then reference = nil end
  if reference ~= nil and math.type(reference) ~= "integer" then
    return nil, "stems.json: time_reference must be an integer or null"
  end
  return {
    job_id = data.job_id, sample_rate = data.sample_rate, frames = data.frames,
    channels = data.channels, time_reference = reference, stems = stems, folder = folder,
  }
end

--- Why stems described by `manifest` cannot replace the region of pending `entry` in a
--- session running at `session_rate`, or nil when they can.
function M.mismatch(entry, manifest, session_rate)
  if manifest.sample_rate ~= session_rate then
    return string.format("stems are %d Hz, the session runs at %d Hz", manifest.sample_rate, session_rate)
  end
  if manifest.frames < entry.start + entry.length then
    return string.format("stems hold %d samples, the region needs %d", manifest.frames, entry.start + entry.length)
  end
  return nil
end

---------------------------------------------------------------------------- OSC

function M.osc_url(host, port)
  return string.format("osc.udp://%s:%d", host or "127.0.0.1", port or M.DEFAULT_PORT)
end

--- The /stembridge/separate request: address, type tags and arguments for
--- ARDOUR.LuaOSC.Address:send(address, types, ...). Options are key=value strings in a fixed
--- (sorted) order, as the OSC contract keeps requests order-free.
function M.separate_message(source, options)
  local keys = {}
  for key in pairs(options or {}) do keys[#keys + 1] = key end
  table.sort(keys)
  local args = { source }
  for _, key in ipairs(keys) do
    local value = options[key]
    if type(value) == "boolean" then value = value and "1" or "0" end
    args[#args + 1] = key .. "=" .. tostring(value)
  end
  return "/stembridge/separate", string.rep("s", #args), args
end

---------------------------------------------------------------------------- positions

--- How to turn an imported stem (the whole file, placed at `import_at`) into a copy of the
--- original region, all in samples: trim its front to where the region's offset into the
--- file begins, trim it to the region's length, then move it onto the region's position.
--- Works for any offset, including a region that starts earlier on the timeline than its
--- offset into the file (which an import position alone could not express).
function M.region_plan(region_position, region_start, region_length, import_at)
  assert(region_position >= 0 and region_start >= 0 and region_length > 0 and import_at >= 0,
    "positions must be non-negative and the length positive")
  return {
    trim_front_to = import_at + region_start,
    length = region_length,
    position = region_position,
  }
end

--- Position in samples at which stems line up when they carry the source's timestamp and
--- no region is known (watch-folder jobs): the BWF TimeReference, else 0.
function M.timestamp_position(manifest)
  return manifest.time_reference or 0
end

---------------------------------------------------------------------------- pending jobs
-- The action records each request in a small tab-separated file inside the session folder;
-- the hook polls for the manifests it names. A file, because Ardour's OSC can send but not
-- receive, and because it survives a restart of Ardour.

local FIELDS = { "manifest", "track", "position", "start", "length", "sent" }

function M.format_pending(entry)
  local values = {}
  for i, key in ipairs(FIELDS) do
    local value = tostring(entry[key])
    assert(not value:find("[\t\n]"), "tab or newline in " .. key)
    values[i] = value
  end
  return table.concat(values, "\t")
end

function M.parse_pending(text)
  local entries = {}
  for line in text:gmatch("[^\n]+") do
    local values = {}
    for value in (line .. "\t"):gmatch("([^\t]*)\t") do values[#values + 1] = value end
    if #values == #FIELDS then
      local entry = {}
      for i, key in ipairs(FIELDS) do entry[key] = values[i] end
      for _, key in ipairs({ "position", "start", "length", "sent" }) do
        entry[key] = math.tointeger(tonumber(entry[key]))
      end
      if entry.position and entry.start and entry.length and entry.sent then
        entries[#entries + 1] = entry
      end
    end
  end
  return entries
end

--- Track name for a stem: "<original track> <stem>", so the stems sort beside the original.
function M.stem_track_name(track, stem)
  return track .. " " .. stem
end

---------------------------------------------------------------------------- Ardour side
-- Only these touch Ardour's API; they are exercised headless by the Ardour tests.

--- Reshape an imported whole-file region `region` (at `import_at`) into the original's place.
function M.apply_region_plan(region, plan)
  region:trim_front(Temporal.timepos_t(plan.trim_front_to))
  region:trim_end(Temporal.timepos_t(plan.trim_front_to + plan.length))
  region:set_position(Temporal.timepos_t(plan.position))
  -- Default region fades would shape the first and last samples and break the null.
  local audio = region:to_audioregion()
  if audio and not audio:isnil() then
    audio:set_fade_in_active(false)
    audio:set_fade_out_active(false)
  end
end

--- Write the audio of `region` (its own data, before fades and fader) to `path` as a BWF
--- stamped with `time_reference`. Returns frames written.
function M.write_region_wav(region, path, rate, time_reference)
  local readable = region:to_audioregion():to_readable()
  local channels = region:to_audioregion():n_channels()
  local frames = readable:readable_length()
  local out = assert(io.open(path, "wb"))
  out:write(M.wav_header(rate, channels, frames, time_reference))
  local block = 8192
  local buffers = {}
  for c = 1, channels do buffers[c] = ARDOUR.DSP.DspShm(block) end
  local done = 0
  while done < frames do
    local count = math.min(block, frames - done)
    local columns = {}
    for c = 1, channels do
      readable:read(buffers[c]:to_float(0), done, count, c - 1)
      columns[c] = buffers[c]:to_float(0):array()
    end
    out:write(M.pack_frames(columns, count))
    done = done + count
  end
  out:close()
  return frames
end

--- Everything the action does for one region: write its audio beside the session, send
--- /stembridge/separate, and return the pending entry the hook will look for.
--- settings: host, port, stems_root (the daemon's paths.output), options (key -> value).
function M.request_separation(session, region, track_name, settings, serial)
  local request_dir = M.join(session:path(), "stembridge")
  os.execute(string.format("mkdir -p %q", request_dir))
  -- A unique, safe name: the stems' folder is predictable and never reused, so Ardour's
  -- import never meets the same path twice (which would stop it with a dialog).
  local name = M.safe_name(track_name .. "_" .. region:name()) .. "_" .. os.date("%Y%m%d-%H%M%S")
    .. "_" .. tostring(serial or 0)
  local request = M.join(request_dir, name .. ".wav")
  local position = region:position():samples()
  M.write_region_wav(region, request, session:nominal_sample_rate(), position)
  local output_sub = "ardour/" .. M.safe_name(session:name())
  local options = { output = output_sub }
  for key, value in pairs(settings.options or {}) do options[key] = value end
  M.send_separate(M.osc_url(settings.host, settings.port), request, options)
  return {
    manifest = M.manifest_path(M.join(settings.stems_root, output_sub), request), track = track_name,
    position = position, start = 0, length = region:length():samples(), sent = os.time(),
  }, request
end

--- Send the separate request; true when Ardour handed the packet to the socket. Ardour's
--- LuaOSC send() reports false even on success, so the result is informative only.
function M.send_separate(url, source, options)
  local address, types, args = M.separate_message(source, options)
  return ARDOUR.LuaOSC.Address(url):send(address, types, table.unpack(args))
end

return M
