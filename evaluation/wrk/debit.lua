-- wrk script: POST /debit of 1 minor unit, each request under a transaction_id of its own,
-- spread over many accounts so that a store's row locks measure the store, not one hot row.
-- Usage: wrk -s debit.lua URL -- RUN_PREFIX ACCOUNTS
local threads = 0

function setup(thread)
  thread:set("thread_number", threads)
  threads = threads + 1
end

function init(args)
  prefix = args[1] or "wrk"
  accounts = tonumber(args[2] or "1000")
  counter = 0
end

function request()
  counter = counter + 1
  local user = "u" .. (counter % accounts)
  local body = '{"user_id":"' .. user .. '","amount":1}'
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["transaction_id"] = prefix .. "-" .. thread_number .. "-" .. counter
  return wrk.format("POST", "/debit", headers, body)
end
