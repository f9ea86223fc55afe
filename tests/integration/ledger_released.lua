-- The contact ledger: one atomic step per call, for one customer (all keys share its hash tag).
--
-- KEYS (all "<namespace>:{<customer_id>}:...", one hash tag; customer_keys in ledger.py escapes
-- the ids that hold a "}"):
--   1 dec  hash   decision or outside-contact id -> JSON of its first result (idempotency)
--   2 idx  zset   id -> decided_at (what to prune from dec, and the history `show` prints)
--   3 mk   zset   "<channel>|<id>" -> decided_at of every marketing contact (caps, back-off)
--   4 tr   zset   "<trigger>|<id>" -> decided_at of marketing contacts and holdouts (cooldown)
--   5 cmp  zset   complaint time -> complaint time
--   6 st   hash   consent:<channel|all> = "<at>|in|out", streak, engaged_at, last_engagement
--   7 bu   zset   id -> decided_at of the marketing contacts of one business unit (the one
--                 deciding or recording: "<namespace>:{<customer_id>}:bu:<unit>")
--
-- ARGV: 1 op, 2 now (epoch ms: decided_at, or the event time of what is recorded),
--       3 retention (ms: the longest window plus a replay margin), then per op (see below).
--
-- Windows are rolling and half-open like the contract's: at time t a window of length w holds
-- what was decided in (t - w, t]. Counts are the values before this decision.

local DEC, IDX, MK, TR, CMP, ST, BU = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6],
  KEYS[7]
local op = ARGV[1]
local now = tonumber(ARGV[2])
local retention = tonumber(ARGV[3])

-- Epoch ms are ~13 digits: format them without exponent or fraction.
local function fmt(x)
  return string.format('%.0f', x)
end

local function since(window)
  return '(' .. fmt(now - window)
end

-- Drop what no rule can read any more; memory per customer stays bounded by the windows.
local function prune()
  local horizon = '(' .. fmt(now - retention)
  local old = redis.call('ZRANGEBYSCORE', IDX, '-inf', horizon)
  for i = 1, #old, 500 do
    redis.call('HDEL', DEC, unpack(old, i, math.min(i + 499, #old)))
  end
  redis.call('ZREMRANGEBYSCORE', IDX, '-inf', horizon)
  redis.call('ZREMRANGEBYSCORE', MK, '-inf', horizon)
  redis.call('ZREMRANGEBYSCORE', TR, '-inf', horizon)
  redis.call('ZREMRANGEBYSCORE', CMP, '-inf', horizon)
  redis.call('ZREMRANGEBYSCORE', BU, '-inf', horizon)
end

-- Time-indexed keys expire once nothing in them can matter. The state hash is kept while it
-- holds something that matters without a time limit (an opt-out, an unanswered streak).
local function expire_all()
  for _, key in ipairs({DEC, IDX, MK, TR, CMP, BU}) do
    redis.call('PEXPIRE', key, retention)
  end
  local state = redis.call('HGETALL', ST)
  local lasting = false
  for i = 1, #state, 2 do
    local name, value = state[i], state[i + 1]
    if name == 'streak' and tonumber(value) > 0 then lasting = true end
    if string.sub(name, 1, 8) == 'consent:' and string.sub(value, -3) == 'out' then
      lasting = true
    end
  end
  if lasting then
    redis.call('PERSIST', ST)
  elseif #state > 0 then
    redis.call('PEXPIRE', ST, retention)
  end
end

local function count_prefix(key, prefix, window)
  local members = redis.call('ZRANGEBYSCORE', key, since(window), fmt(now), 'WITHSCORES')
  local n, last = 0, nil
  for i = 1, #members, 2 do
    if string.sub(members[i], 1, #prefix) == prefix then
      n = n + 1
      local at = tonumber(members[i + 1])
      if last == nil or at > last then last = at end
    end
  end
  return n, last
end

-- Consent of one channel: the latest record of that channel or of `all` decides; at equal
-- times an opt-out wins (the careful reading).
local function parse_consent(value)
  if not value then return nil, nil end
  local sep = string.find(value, '|', 1, true)
  return tonumber(string.sub(value, 1, sep - 1)), string.sub(value, sep + 1)
end

local function opted_out(channel)
  local at_c, st_c = parse_consent(redis.call('HGET', ST, 'consent:' .. channel))
  local at_a, st_a = parse_consent(redis.call('HGET', ST, 'consent:all'))
  if at_c == nil and at_a == nil then return false end
  if at_a == nil or (at_c ~= nil and at_c > at_a) then return st_c == 'out' end
  if at_c == nil or at_a > at_c then return st_a == 'out' end
  return st_c == 'out' or st_a == 'out'
end

local function set_consent(scope, status, at)
  local old_at = parse_consent(redis.call('HGET', ST, 'consent:' .. scope))
  if old_at == nil or at >= old_at then
    redis.call('HSET', ST, 'consent:' .. scope, fmt(at) .. '|' .. status)
  end
end

-- A marketing contact extends the unanswered streak unless an engagement is not older.
local function count_unanswered(at)
  local engaged_at = tonumber(redis.call('HGET', ST, 'engaged_at') or '-1')
  if at > engaged_at then
    redis.call('HINCRBY', ST, 'streak', 1)
  end
end

local function record(id, at, result)
  local text = cjson.encode(result)
  redis.call('HSET', DEC, id, text)
  redis.call('ZADD', IDX, fmt(at), id)
  return text
end

if op == 'decide' then
  -- ARGV 4 id, 5 category, 6 trigger, 7 holdout (1/0), 8 cap 7d, 9 cap 30d, 10 cooldown ms,
  -- 11 back-off after, 12 back-off max, 13 back-off window ms, 14 complaint quiet ms,
  -- 15 segment, 16 multiplier, 17 business unit, 18 its 7-day cap, 19 its 30-day cap (-1: none),
  -- 20 number of channels, then (channel, cap, window ms) each.
  local id = ARGV[4]
  local first = redis.call('HGET', DEC, id)
  if first then return first end
  prune()
  local category, trigger = ARGV[5], ARGV[6]
  local channels = {}
  for i = 1, tonumber(ARGV[20]) do
    local base = 20 + (i - 1) * 3
    channels[i] = {name = ARGV[base + 1], cap = tonumber(ARGV[base + 2]),
                   window = tonumber(ARGV[base + 3])}
  end
  local unit = ARGV[17]
  local result = {o = 'contact', r = '', c = channels[1].name, t = now, g = trigger,
                  k = category, bu = unit}
  if category ~= 'marketing' then
    -- Service: never stopped by marketing rules or opt-outs, never counted; recorded.
    result.d = {}
    local text = record(id, now, result)
    expire_all()
    return text
  end

  local cap7, cap30 = tonumber(ARGV[8]), tonumber(ARGV[9])
  local cooldown, after = tonumber(ARGV[10]), tonumber(ARGV[11])
  local bo_max, bo_window = tonumber(ARGV[12]), tonumber(ARGV[13])
  local quiet = tonumber(ARGV[14])
  local c7 = redis.call('ZCOUNT', MK, since(7 * 86400000), fmt(now))
  local c30 = redis.call('ZCOUNT', MK, since(30 * 86400000), fmt(now))
  local bo_count = redis.call('ZCOUNT', MK, since(bo_window), fmt(now))
  local streak = tonumber(redis.call('HGET', ST, 'streak') or '0')
  local cd_count, cd_last = count_prefix(TR, trigger .. '|', cooldown)
  local complaints = redis.call('ZRANGEBYSCORE', CMP, since(quiet), fmt(now))
  local bu7, bu30 = tonumber(ARGV[18]), tonumber(ARGV[19])
  local b7 = redis.call('ZCOUNT', BU, since(7 * 86400000), fmt(now))
  local b30 = redis.call('ZCOUNT', BU, since(30 * 86400000), fmt(now))
  local complaint_at = nil
  if #complaints > 0 then complaint_at = tonumber(complaints[#complaints]) end

  local details = {
    multiplier = tonumber(ARGV[16]),
    global_7d = {count = c7, cap = cap7},
    global_30d = {count = c30, cap = cap30},
    channels = {},
    trigger_cooldown = {count = cd_count, days = cooldown / 86400000},
    non_responder = {unanswered = streak, after = after, active = streak >= after,
                     count = bo_count, cap = bo_max, days = bo_window / 86400000},
  }
  if ARGV[15] ~= '' then details.segment = ARGV[15] end
  if bu7 >= 0 or bu30 >= 0 then
    details.business_unit = {name = unit, count_7d = b7, count_30d = b30}
    if bu7 >= 0 then details.business_unit.cap_7d = bu7 end
    if bu30 >= 0 then details.business_unit.cap_30d = bu30 end
  end
  if cd_last then details.trigger_cooldown.last_at = cd_last end
  if complaint_at then
    details.complaint = {at = complaint_at, quiet_until = complaint_at + quiet}
  end

  local any_open = nil
  for _, ch in ipairs(channels) do
    ch.out = opted_out(ch.name)
    ch.count = count_prefix(MK, ch.name .. '|', ch.window)
    details.channels[ch.name] = {count = ch.count, cap = ch.cap, days = ch.window / 86400000,
                                 opted_out = ch.out}
    if not ch.out and any_open == nil then any_open = ch.name end
  end

  if ARGV[7] == '1' and complaint_at == nil and any_open ~= nil and cd_count == 0 then
    -- Holdout: among candidates that pass the opt-out and complaint rules. It counts toward
    -- the trigger's cooldown (so within the cooldown a held-out customer is suppressed like a
    -- contacted one: one holdout per cooldown, comparable groups), never toward caps or the
    -- unanswered streak; caps and back-off, which limit contacts, do not stop a holdout.
    result.o = 'holdout'
    result.c = any_open
    details.holdout = true
    result.d = details
    redis.call('ZADD', TR, fmt(now), trigger .. '|' .. id)
    local text = record(id, now, result)
    expire_all()
    return text
  end

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
  local chosen = nil
  local seen = {}
  for _, ch in ipairs(channels) do
    local own = {}
    if ch.count >= ch.cap then own[#own + 1] = 'channel_cap' end
    if ch.out then own[#own + 1] = 'opted_out' end
    if #common == 0 and #own == 0 then
      chosen = ch.name
      break
    end
    for _, r in ipairs(own) do seen[r] = true end
  end

  if chosen then
    result.c = chosen
    if chosen ~= channels[1].name then details.fallback_from = channels[1].name end
    redis.call('ZADD', MK, fmt(now), chosen .. '|' .. id)
    redis.call('ZADD', BU, fmt(now), id)
    redis.call('ZADD', TR, fmt(now), trigger .. '|' .. id)
    count_unanswered(now)
  else
    for r in pairs(seen) do common[#common + 1] = r end
    result.o = 'suppressed'
    result.r = table.concat(common, ',')
  end
  result.d = details
  local text = record(id, now, result)
  expire_all()
  return text

elseif op == 'engage' then
  -- ARGV 4 channel, 5 action, 6 decision id ('' when none).
  local channel, action = ARGV[4], ARGV[5]
  prune()
  if action == 'opened' or action == 'clicked' or action == 'converted' then
    local engaged_at = tonumber(redis.call('HGET', ST, 'engaged_at') or '-1')
    if now > engaged_at then
      -- Contacts after the engagement still count as unanswered (engagements arrive late).
      redis.call('HSET', ST, 'engaged_at', fmt(now),
                 'streak', redis.call('ZCOUNT', MK, '(' .. fmt(now), '+inf'))
    end
  elseif action == 'unsubscribed' then
    set_consent(channel, 'out', now)
  else
    return 0  -- delivered, bounced: nothing the policy reads
  end
  redis.call('HSET', ST, 'last_engagement',
             cjson.encode({action = action, channel = channel, at = now, decision_id = ARGV[6]}))
  expire_all()
  return 1

elseif op == 'consent' then
  -- ARGV 4 channel or 'all', 5 'in' or 'out'.
  prune()
  set_consent(ARGV[4], ARGV[5], now)
  expire_all()
  return 1

elseif op == 'complaint' then
  prune()
  redis.call('ZADD', CMP, fmt(now), fmt(now))
  expire_all()
  return 1

elseif op == 'outside' then
  -- ARGV 4 id, 5 channel, 6 category, 7 business unit. Idempotent by id: 1 new, 0 known.
  local id = ARGV[4]
  if redis.call('HEXISTS', DEC, id) == 1 then return 0 end
  prune()
  if ARGV[6] == 'marketing' then
    redis.call('ZADD', MK, fmt(now), ARGV[5] .. '|' .. id)
    redis.call('ZADD', BU, fmt(now), id)
    count_unanswered(now)
  end
  record(id, now, {o = 'contact', r = '', c = ARGV[5], t = now, k = ARGV[6], bu = ARGV[7]})
  expire_all()
  return 1
end

return redis.error_reply('ledger.lua: unknown op ' .. tostring(op))
