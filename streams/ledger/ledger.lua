-- The contact ledger: one atomic step per call, for one customer (all keys share its hash tag).
--
-- KEYS (all "<namespace>:{<customer_id>}:...", one hash tag; customer_keys in streams/ledger/keys.py escapes
-- the ids that hold a "}"):
--   1 dec  hash   decision or outside-contact id -> JSON of its first result (idempotency)
--   2 idx  zset   id -> decided_at (what to prune from dec, and the history `show` prints)
--   3 mk   zset   "<channel>|<id>" -> decided_at of every marketing contact (caps, back-off)
--   4 tr   zset   "<trigger>|<id>" -> decided_at of marketing contacts and holdouts (cooldown)
--   5 cmp  zset   complaint time -> complaint time
--   6 st   hash   consent:<channel|all> = "<at>|in|out", streak, engaged_at, last_engagement;
--                 with the sunset rule, per channel: unanswered:<channel>, engaged_at:<channel>;
--                 with the bounce rule, per channel: bounced:<channel>, reached:<channel> (the
--                 latest bounce, and the latest delivered/opened/clicked)
--   7 bu   zset   id -> decided_at of the marketing contacts of one business unit (the one
--                 deciding or recording: "<namespace>:{<customer_id>}:bu:<unit>")
--   8 cap  string the day's contacts of the candidate's action (capacity rule only; in the
--                 customer's slot: see capacity_key in streams/ledger/keys.py)
--
-- ARGV: 1 op, 2 now (epoch ms, an integer: decided_at, or the event time of what is recorded),
--       3 retention (ms: the longest window plus a replay margin), then per op (see below).
--
-- Windows are rolling and half-open like the contract's: at time t a window of length w holds
-- what was decided in (t - w, t]. Counts are the values before this decision.
--
-- The data structures are those of the releases before (old and new workers share a ledger
-- during a rolling deploy). What a call costs is mostly the number of Redis commands it runs
-- and the Lua around them, not the size of the sets (the caps keep them small), so a decision
-- reads each set it needs once, in full up to now, and counts every window from that in Lua
-- with the same half-open bounds; it reads the state hash once; a service decision reads none
-- of them; it prunes only what has passed the retention, and sets the expiry of the keys it
-- wrote. tests/integration/test_ledger_script.py holds it to the released script's decisions.
--
-- The helpers take what they use as arguments: the script's body runs on every call, and a
-- function that refers to the body's locals (upvalues) costs several times more to create.

local DEC, IDX, MK, TR, CMP, ST, BU = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6],
  KEYS[7]
local op = ARGV[1]
local NOW = ARGV[2]  -- an integer as the caller wrote it: used as a score as it is
local now = tonumber(NOW)
local retention = tonumber(ARGV[3])
local DAY = 86400000
local WEEK, MONTH = 7 * DAY, 30 * DAY
-- What is older than this has passed the retention: no rule reads it any more.
local kept_from = now - retention
-- Epoch ms are ~13 digits: format them without exponent or fraction.
local horizon = '(' .. string.format('%.0f', kept_from)
-- Keys written by this call (they get their expiry at the end), and the state hash's fields.
local written = {}
local state, state_existed, state_lasted = nil, false, false
local changes = {}  -- field/value pairs of the state hash to write (one HSET per call)

-- The decision's JSON is written here rather than by cjson.encode, which formats every number
-- with sprintf (most of the cost of encoding a decision). Numbers are written as cjson writes
-- them ("%.14g"; small integers without sprintf), strings by cjson.
local str = cjson.encode

local function num(x)
  if x >= 0 and x < 100 and x % 1 == 0 then
    if x < 10 then return string.char(48 + x) end
    return string.char(48 + (x - x % 10) / 10, 48 + x % 10)
  end
  return string.format('%.14g', x)
end

-- Drop what no rule can read any more, so memory per customer stays bounded by the windows:
-- a set is pruned when it is written to (or read in full and found to hold something past the
-- retention), the decision hash with the ids of idx.
local function prune_decisions(dec, idx, below)
  local old = redis.call('ZRANGEBYSCORE', idx, '-inf', below)
  if #old == 0 then return end
  for i = 1, #old, 500 do
    redis.call('HDEL', dec, unpack(old, i, math.min(i + 499, #old)))
  end
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', below)
end

-- A set read in full up to `upto` (members, and scores as numbers); pruned when it holds
-- something older than `from`.
local function read_all(key, upto, from, below)
  local members = redis.call('ZRANGEBYSCORE', key, '-inf', upto, 'WITHSCORES')
  for i = 2, #members, 2 do members[i] = tonumber(members[i]) end
  if #members > 0 and members[2] < from then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', below)
  end
  return members
end

-- Members of a set read by read_all in (lo, hi], and the latest of their times; only those
-- starting with `prefix` when it is given.
local function count(members, lo, hi, prefix)
  local n, last = 0, nil
  for i = 1, #members, 2 do
    local at = members[i + 1]
    if at > lo and at <= hi and (prefix == nil or
        string.sub(members[i], 1, #prefix) == prefix) then
      n = n + 1
      if last == nil or at > last then last = at end
    end
  end
  return n, last
end

-- A channel is undeliverable from a bounce until a delivery (or an open or click) later than
-- it; at equal times the bounce wins (the careful reading).
local function undeliverable(fields, channel)
  local bounced = fields['bounced:' .. channel]
  if bounced == nil then return false end
  local reached = fields['reached:' .. channel]
  return reached == nil or tonumber(bounced) >= tonumber(reached)
end

-- The state hash holds something that matters without a time limit: an opt-out, an
-- unanswered streak (of any channel, for the sunset rule) or an undeliverable channel.
local function lasting(fields)
  if tonumber(fields.streak or '0') > 0 then return true end
  for name, value in pairs(fields) do
    local head = string.sub(name, 1, 8)
    if head == 'consent:' and string.sub(value, -3) == 'out' then
      return true
    end
    if head == 'unanswer' and tonumber(value) > 0 then return true end
    if head == 'bounced:' and undeliverable(fields, string.sub(name, 9)) then return true end
  end
  return false
end

-- The state hash's fields; whether it existed and was lasting (then it has no expiry already:
-- every call that wrote it left it so).
local function read_state(key)
  local flat = redis.call('HGETALL', key)
  local fields = {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  return fields, #flat > 0, #flat > 0 and lasting(fields)
end

-- Consent of one channel: the latest record of that channel or of `all` decides; at equal
-- times an opt-out wins (the careful reading).
local function parse_consent(value)
  if not value then return nil, nil end
  local sep = string.find(value, '|', 1, true)
  return tonumber(string.sub(value, 1, sep - 1)), string.sub(value, sep + 1)
end

local function opted_out(fields, channel)
  local at_c, st_c = parse_consent(fields['consent:' .. channel])
  local at_a, st_a = parse_consent(fields['consent:all'])
  if at_c == nil and at_a == nil then return false end
  if at_a == nil or (at_c ~= nil and at_c > at_a) then return st_c == 'out' end
  if at_c == nil or at_a > at_c then return st_a == 'out' end
  return st_c == 'out' or st_a == 'out'
end

local function set_state(fields, pending, name, value)
  fields[name] = value
  pending[#pending + 1] = name
  pending[#pending + 1] = value
end

local function set_consent(fields, pending, scope, status, at, at_text)
  local old_at = parse_consent(fields['consent:' .. scope])
  if old_at == nil or at >= old_at then
    set_state(fields, pending, 'consent:' .. scope, at_text .. '|' .. status)
  end
end

-- A marketing contact extends the unanswered streak unless an engagement is not older.
local function count_unanswered(key, fields, at, wrote)
  if at > tonumber(fields.engaged_at or '-1') then
    fields.streak = tostring(redis.call('HINCRBY', key, 'streak', 1))
    wrote[key] = true
  end
end

-- Sunset: the same count per channel, ended only by a response on that channel.
local function count_unanswered_on(key, fields, channel, at, wrote)
  if at > tonumber(fields['engaged_at:' .. channel] or '-1') then
    local name = 'unanswered:' .. channel
    fields[name] = tostring(redis.call('HINCRBY', key, name, 1))
    wrote[key] = true
  end
end

-- A key expires once nothing in it can matter: the retention after the last call that wrote
-- it (what it holds is no newer than that call). The state hash is kept while it is lasting
-- (a hash created by this call has no expiry yet).
local function finish(wrote, st, fields, existed, lasted, ms)
  for key in pairs(wrote) do
    if key ~= st then redis.call('PEXPIRE', key, ms) end
  end
  if wrote[st] then
    if not lasting(fields) then
      redis.call('PEXPIRE', st, ms)
    elseif existed and not lasted then
      redis.call('PERSIST', st)
    end
  end
end

if op == 'decide' then
  -- ARGV 4 id, 5 category, 6 trigger, 7 holdout (1/0; 2: the global control group, held out
  -- like 1 and marked "global_control" in the details), 8 cap 7d, 9 cap 30d, 10 cooldown ms,
  -- 11 back-off after, 12 back-off max, 13 back-off window ms, 14 complaint quiet ms,
  -- 15 segment, 16 multiplier, 17 business unit, 18 its 7-day cap, 19 its 30-day cap (-1: none),
  -- 20 number of channels, then (channel, cap, window ms) each, then (from e = 21 + 3 *
  -- channels) e sunset after (unanswered contacts on a channel; -1: off), e + 1 bounce rule on
  -- ('1'; else off), e + 2 the capacity counter's limit (KEYS[8]; -1: no capacity rule),
  -- e + 3 its expiry (ms).
  -- Arguments after those of the release before: a worker of that release sends none, and
  -- that release's script ignores them (every new rule is then off).
  local id = ARGV[4]
  local first = redis.call('HGET', DEC, id)
  if first then return first end
  prune_decisions(DEC, IDX, horizon)
  local category, trigger, unit = ARGV[5], ARGV[6], ARGV[17]
  local channels = {}
  local n_channels = tonumber(ARGV[20])
  for i = 1, n_channels do
    local base = 20 + (i - 1) * 3
    channels[i] = {name = ARGV[base + 1], cap = tonumber(ARGV[base + 2]),
                   window = tonumber(ARGV[base + 3])}
  end
  local extra = 21 + 3 * n_channels
  local sunset = tonumber(ARGV[extra] or '-1')
  local bounces = ARGV[extra + 1] == '1'
  local capacity = tonumber(ARGV[extra + 2] or '-1')
  -- The first result of this id, as the releases before wrote it: outcome, reasons, channel,
  -- decided_at, trigger, category, business unit, details. (The time as the caller wrote it
  -- when cjson would write the same digits: below 10^14.)
  local tail = ',"t":' .. (#NOW < 15 and NOW or num(now)) .. ',"g":' .. str(trigger) ..
    ',"k":' .. str(category) .. ',"bu":' .. str(unit) .. ',"d":'
  local text
  if category ~= 'marketing' then
    -- Service: never stopped by marketing rules or opt-outs, never counted; recorded.
    text = '{"o":"contact","r":"","c":' .. str(channels[1].name) .. tail .. '{}}'
    redis.call('HSET', DEC, id, text)
    redis.call('ZADD', IDX, NOW, id)
    redis.call('PEXPIRE', DEC, retention)
    redis.call('PEXPIRE', IDX, retention)
    return text
  end

  local cap7, cap30 = tonumber(ARGV[8]), tonumber(ARGV[9])
  local cooldown, after = tonumber(ARGV[10]), tonumber(ARGV[11])
  local bo_max, bo_window = tonumber(ARGV[12]), tonumber(ARGV[13])
  local quiet = tonumber(ARGV[14])
  local bu7, bu30 = tonumber(ARGV[18]), tonumber(ARGV[19])
  state, state_existed, state_lasted = read_state(ST)
  -- Each set is read once, in full up to now, and every window counted from that.
  local contacts = read_all(MK, NOW, kept_from, horizon)
  local c7 = count(contacts, now - WEEK, now)
  local c30 = count(contacts, now - MONTH, now)
  local bo_count = count(contacts, now - bo_window, now)
  local streak = tonumber(state.streak or '0')
  local cd_count, cd_last = count(read_all(TR, NOW, kept_from, horizon), now - cooldown, now,
                                  trigger .. '|')
  local b7, b30 = 0, 0
  local unit_read = bu7 >= 0 or bu30 >= 0
  if unit_read then
    -- Only a unit with a cap reads its contacts (they are reported with the cap).
    local by_unit = read_all(BU, NOW, kept_from, horizon)
    b7, b30 = count(by_unit, now - WEEK, now), count(by_unit, now - MONTH, now)
  end
  -- The latest complaint up to now (the set is sorted by time), if within the quiet period.
  local complaints = redis.call('ZRANGEBYSCORE', CMP, '-inf', NOW)
  local complaint_at = nil
  if #complaints > 0 then
    if tonumber(complaints[1]) < kept_from then
      redis.call('ZREMRANGEBYSCORE', CMP, '-inf', horizon)
    end
    local latest = tonumber(complaints[#complaints])
    if latest > now - quiet then complaint_at = latest end
  end

  -- The details reported with the outcome (the counters behind every rule).
  local parts = {'{"multiplier":', num(tonumber(ARGV[16])),
    ',"global_7d":{"count":', num(c7), ',"cap":', num(cap7),
    '},"global_30d":{"count":', num(c30), ',"cap":', num(cap30), '},"channels":{'}
  local any_open = nil
  for i, ch in ipairs(channels) do
    ch.out = opted_out(state, ch.name)
    ch.count = count(contacts, now - ch.window, now, ch.name .. '|')
    local more = ''
    if sunset >= 0 then
      ch.unanswered = tonumber(state['unanswered:' .. ch.name] or '0')
      more = ',"unanswered":' .. num(ch.unanswered)
    end
    if bounces then
      ch.undeliverable = undeliverable(state, ch.name)
      more = more .. ',"undeliverable":' .. tostring(ch.undeliverable)
    end
    parts[#parts + 1] = (i > 1 and ',' or '') .. str(ch.name) .. ':{"count":' ..
      num(ch.count) .. ',"cap":' .. num(ch.cap) .. ',"days":' .. num(ch.window / DAY) ..
      ',"opted_out":' .. tostring(ch.out) .. more .. '}'
    if not ch.out and any_open == nil then any_open = ch.name end
  end
  parts[#parts + 1] = '},"trigger_cooldown":{"count":' .. num(cd_count) .. ',"days":' ..
    num(cooldown / DAY) .. (cd_last and (',"last_at":' .. num(cd_last)) or '') ..
    '},"non_responder":{"unanswered":' .. num(streak) .. ',"after":' .. num(after) ..
    ',"active":' .. tostring(streak >= after) .. ',"count":' .. num(bo_count) .. ',"cap":' ..
    num(bo_max) .. ',"days":' .. num(bo_window / DAY) .. '}'
  if sunset >= 0 then parts[#parts + 1] = ',"sunset":{"after":' .. num(sunset) .. '}' end
  local used = 0
  if capacity >= 0 then
    used = tonumber(redis.call('GET', KEYS[8]) or '0')
    parts[#parts + 1] = ',"capacity":{"count":' .. num(used) .. ',"cap":' .. num(capacity) .. '}'
  end
  if ARGV[15] ~= '' then parts[#parts + 1] = ',"segment":' .. str(ARGV[15]) end
  if unit_read then
    parts[#parts + 1] = ',"business_unit":{"name":' .. str(unit) .. ',"count_7d":' ..
      num(b7) .. ',"count_30d":' .. num(b30) ..
      (bu7 >= 0 and (',"cap_7d":' .. num(bu7)) or '') ..
      (bu30 >= 0 and (',"cap_30d":' .. num(bu30)) or '') .. '}'
  end
  if complaint_at then
    parts[#parts + 1] = ',"complaint":{"at":' .. num(complaint_at) .. ',"quiet_until":' ..
      num(complaint_at + quiet) .. '}'
  end

  local held = ARGV[7]
  if (held == '1' or held == '2') and complaint_at == nil and any_open ~= nil and
      cd_count == 0 then
    -- Holdout: among candidates that pass the opt-out and complaint rules. It counts toward
    -- the trigger's cooldown (so within the cooldown a held-out customer is suppressed like a
    -- contacted one: one holdout per cooldown, comparable groups), never toward caps, capacity
    -- or the unanswered streak; caps and back-off, which limit contacts, do not stop a
    -- holdout. The global control group's holdouts ('2') are the same, and marked.
    parts[#parts + 1] = held == '2' and ',"holdout":true,"global_control":true}' or
      ',"holdout":true}'
    redis.call('ZADD', TR, NOW, trigger .. '|' .. id)
    written[TR] = true
    text = '{"o":"holdout","r":"","c":' .. str(any_open) .. tail .. table.concat(parts) .. '}'
  else
    -- Every rule that applies is reported, not just the first.
    local common = {}
    if c7 >= cap7 then common[#common + 1] = 'global_cap_7d' end
    if c30 >= cap30 then common[#common + 1] = 'global_cap_30d' end
    if (bu7 >= 0 and b7 >= bu7) or (bu30 >= 0 and b30 >= bu30) then
      common[#common + 1] = 'business_unit_cap'
    end
    if cd_count > 0 then common[#common + 1] = 'trigger_cooldown' end
    if streak >= after and bo_count >= bo_max then
      common[#common + 1] = 'non_responder_backoff'
    end
    if complaint_at then common[#common + 1] = 'recent_complaint' end
    -- Per action, whatever the channel: a fallback is over capacity too.
    if capacity >= 0 and used >= capacity then common[#common + 1] = 'capacity' end
    local chosen = nil
    local seen = {}
    for _, ch in ipairs(channels) do
      local own = {}
      if ch.count >= ch.cap then own[#own + 1] = 'channel_cap' end
      if ch.out then own[#own + 1] = 'opted_out' end
      if sunset >= 0 and ch.unanswered >= sunset then own[#own + 1] = 'sunset' end
      if ch.undeliverable then own[#own + 1] = 'undeliverable' end
      if #common == 0 and #own == 0 then
        chosen = ch.name
        break
      end
      for _, r in ipairs(own) do seen[r] = true end
    end

    if chosen then
      if chosen ~= channels[1].name then
        parts[#parts + 1] = ',"fallback_from":' .. str(channels[1].name)
      end
      redis.call('ZADD', MK, NOW, chosen .. '|' .. id)
      if not unit_read then redis.call('ZREMRANGEBYSCORE', BU, '-inf', horizon) end
      redis.call('ZADD', BU, NOW, id)
      redis.call('ZADD', TR, NOW, trigger .. '|' .. id)
      written[MK], written[BU], written[TR] = true, true, true
      count_unanswered(ST, state, now, written)
      if sunset >= 0 then count_unanswered_on(ST, state, chosen, now, written) end
      if capacity >= 0 then
        redis.call('INCR', KEYS[8])
        redis.call('PEXPIRE', KEYS[8], ARGV[extra + 3])
      end
      text = '{"o":"contact","r":"","c":' .. str(chosen) .. tail .. table.concat(parts) .. '}}'
    else
      for r in pairs(seen) do common[#common + 1] = r end
      text = '{"o":"suppressed","r":"' .. table.concat(common, ',') .. '","c":' ..
        str(channels[1].name) .. tail .. table.concat(parts) .. '}}'
    end
  end
  redis.call('HSET', DEC, id, text)
  redis.call('ZADD', IDX, NOW, id)
  written[DEC], written[IDX] = true, true
  finish(written, ST, state, state_existed, state_lasted, retention)
  return text

elseif op == 'engage' then
  -- ARGV 4 channel, 5 action, 6 decision id ('' when none), 7 sunset on ('1'; else off),
  -- 8 bounce rule on ('1'; else off).
  local channel, action = ARGV[4], ARGV[5]
  local bounces = ARGV[8] == '1'
  prune_decisions(DEC, IDX, horizon)
  local delivery = action == 'bounced' or action == 'delivered'
  if action ~= 'opened' and action ~= 'clicked' and action ~= 'converted'
      and action ~= 'unsubscribed' and not (bounces and delivery) then
    return 0  -- delivered, bounced: nothing the policy reads (without the bounce rule)
  end
  state, state_existed, state_lasted = read_state(ST)
  if bounces and action ~= 'unsubscribed' and action ~= 'converted' then
    -- The latest bounce, and the latest sign that the channel reaches the customer.
    local name = (action == 'bounced' and 'bounced:' or 'reached:') .. channel
    if now > tonumber(state[name] or '-1') then set_state(state, changes, name, NOW) end
    if delivery then
      if #changes > 0 then
        redis.call('HSET', ST, unpack(changes))
        written[ST] = true
      end
      finish(written, ST, state, state_existed, state_lasted, retention)
      return 1
    end
  end
  if action == 'unsubscribed' then
    set_consent(state, changes, channel, 'out', now, NOW)
  elseif now > tonumber(state.engaged_at or '-1') then
    -- Contacts after the engagement still count as unanswered (engagements arrive late).
    set_state(state, changes, 'engaged_at', NOW)
    set_state(state, changes, 'streak',
              tostring(redis.call('ZCOUNT', MK, '(' .. NOW, '+inf')))
  end
  if action ~= 'unsubscribed' and ARGV[7] == '1' and
      now > tonumber(state['engaged_at:' .. channel] or '-1') then
    -- Sunset: the channel's contacts after its response still count as unanswered.
    local later = redis.call('ZRANGEBYSCORE', MK, '(' .. NOW, '+inf')
    local prefix, n = channel .. '|', 0
    for i = 1, #later do
      if string.sub(later[i], 1, #prefix) == prefix then n = n + 1 end
    end
    set_state(state, changes, 'engaged_at:' .. channel, NOW)
    set_state(state, changes, 'unanswered:' .. channel, tostring(n))
  end
  set_state(state, changes, 'last_engagement',
            cjson.encode({action = action, channel = channel, at = now, decision_id = ARGV[6]}))
  redis.call('HSET', ST, unpack(changes))
  written[ST] = true
  finish(written, ST, state, state_existed, state_lasted, retention)
  return 1

elseif op == 'consent' then
  -- ARGV 4 channel or 'all', 5 'in' or 'out'.
  prune_decisions(DEC, IDX, horizon)
  state, state_existed, state_lasted = read_state(ST)
  set_consent(state, changes, ARGV[4], ARGV[5], now, NOW)
  if #changes > 0 then
    redis.call('HSET', ST, unpack(changes))
    written[ST] = true
  end
  finish(written, ST, state, state_existed, state_lasted, retention)
  return 1

elseif op == 'complaint' then
  prune_decisions(DEC, IDX, horizon)
  redis.call('ZREMRANGEBYSCORE', CMP, '-inf', horizon)
  redis.call('ZADD', CMP, NOW, NOW)
  redis.call('PEXPIRE', CMP, retention)
  return 1

elseif op == 'outside' then
  -- ARGV 4 id, 5 channel, 6 category, 7 business unit, 8 sunset on ('1'; else off).
  -- Idempotent by id: 1 new, 0 known.
  local id = ARGV[4]
  if redis.call('HEXISTS', DEC, id) == 1 then return 0 end
  prune_decisions(DEC, IDX, horizon)
  if ARGV[6] == 'marketing' then
    state, state_existed, state_lasted = read_state(ST)
    redis.call('ZREMRANGEBYSCORE', MK, '-inf', horizon)
    redis.call('ZADD', MK, NOW, ARGV[5] .. '|' .. id)
    redis.call('ZREMRANGEBYSCORE', BU, '-inf', horizon)
    redis.call('ZADD', BU, NOW, id)
    written[MK], written[BU] = true, true
    count_unanswered(ST, state, now, written)
    if ARGV[8] == '1' then count_unanswered_on(ST, state, ARGV[5], now, written) end
  end
  redis.call('HSET', DEC, id, cjson.encode({o = 'contact', r = '', c = ARGV[5], t = now,
                                            k = ARGV[6], bu = ARGV[7]}))
  redis.call('ZADD', IDX, NOW, id)
  written[DEC], written[IDX] = true, true
  finish(written, ST, state, state_existed, state_lasted, retention)
  return 1
end

return redis.error_reply('ledger.lua: unknown op ' .. tostring(op))
