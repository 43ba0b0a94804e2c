---@meta
-- PiCloud script API: type stubs for the Lua Language Server (LuaLS).
--
-- Point your editor at this file (e.g. `"workspace.library": ["stubs"]` in
-- `.luarc.json`) to get completion and type checks for the globals below.
-- Nothing here runs: the real functions are provided by the PiCloud node.
--
-- A script returns its handler:
--
--     return function(req)
--       local n = kv.incr("visits")
--       return { json = { visits = n } }
--     end
--
-- Sandbox: each invocation has an instruction budget, a memory cap and a
-- wall-clock timeout. When one runs out the invocation is ended (HTTP error
-- `script_timeout` / `script_memory`); `pcall` cannot catch that. Not
-- available: `io`, `debug`, `package`, `load`, `loadfile`,
-- `dofile`, `string.dump`, `warn`, and `os` except `os.time`, `os.clock`,
-- `os.date`. `require` loads only the app's modules (`require("util.strings")`
-- is `modules/util/strings.lua`) and pinned shared libraries (`require("@mathx")`). `collectgarbage` only accepts `"count"`. `setmetatable` refuses
-- metatables with `__gc`. Service calls (`kv.*`) must be made from the
-- handler itself, not from inside a coroutine, and not from the script's
-- top level (which runs once when the app loads).
--
-- Errors: a failed service call raises an error whose message is
-- `"<code>: <message>"` (e.g. `"no_leader: ..."`); catch it with `pcall`.
-- Uncaught, the request fails with that code. Every code is in
-- `docs/errors.md`. `"outcome_unknown: ..."` means a write's answer was
-- lost after it was sent: it may or may not have applied.

---------------------------------------------------------------------------
-- Request and response
---------------------------------------------------------------------------

---The request a handler receives.
---@class picloud.Request
---@field method string HTTP method, upper case (`"GET"`, `"POST"`, ...).
---@field path string Request path, e.g. `"/users/7"`.
---@field params table<string, string> Route parameters (`/users/{id}` gives `params.id`).
---@field query table<string, string> Query string parameters.
---@field headers table<string, string> Request headers; names are lower case. `headers["x-request-id"]` is the request's id (also sent back to the client and written with any failure into the app's log).
---@field body string The raw body (may be binary).
---@field json any|nil The decoded body whenever the body parses as JSON, whatever its content type; nil for an empty body or one that does not parse. A body sent as `application/json` (or any `+json` type) that does not parse is refused with 400 `invalid_json` before the handler runs.

---What a handler returns (or return a plain string: 200, `text/plain; charset=utf-8`).
---Set `body` or `json`, not both.
---@class picloud.Response
---@field status? integer HTTP status, 100 to 599. Default 200.
---@field headers? table<string, string|number|string[]> Response headers; names are lower-cased; a list gives the header several times (e.g. `set-cookie`). Values must not contain control characters.
---@field body? string The raw body.
---@field json? any Encoded with `json.encode`; `content-type` defaults to `application/json`.

---A handler: what every script must return.
---@alias picloud.Handler fun(req: picloud.Request): picloud.Response|string

---------------------------------------------------------------------------
-- kv: the app's replicated key-value store
---------------------------------------------------------------------------

---Values are anything JSON can represent: nil-free tables, strings, numbers,
---booleans and `json.null` (see `json` for how tables map). Functions,
---coroutines, cyclic tables and NaN are errors. Keys are non-empty strings.
---Each app has its own keys.
kv = {}

---@class picloud.KvGetOptions
---@field consistency? "linearizable"|"stale" `"linearizable"` (default) sees every write acknowledged before the read; `"stale"` reads this node's copy without asking the leader (faster, may lag).

---@class picloud.KvSetOptions
---@field ttl? number Seconds until the key expires (positive).

---@class picloud.KvListOptions
---@field prefix? string Only keys starting with this (default: all keys).
---@field limit? integer Most items in this page (default 100; the node sets the maximum).
---@field cursor? string The `cursor` of the previous page, to continue after it.

---@class picloud.KvItem
---@field key string
---@field value any

---@class picloud.KvPage
---@field items picloud.KvItem[] In key order.
---@field cursor string|nil Pass as `cursor` to get the next page; nil when there are no more.

---Reads a key.
---@param key string
---@param options? picloud.KvGetOptions
---@return any value The stored value, or nil when the key is absent.
function kv.get(key, options) end

---Writes a key. `kv.set(key, nil)` is an error: use `kv.delete`.
---@param key string
---@param value any JSON-representable, not nil.
---@param options? picloud.KvSetOptions
function kv.set(key, value, options) end

---Removes a key.
---@param key string
---@return boolean existed Whether the key was there.
function kv.delete(key) end

---Adds `by` to an integer value (an absent key counts as 0).
---Fails with `not_a_number` when the value is not an integer.
---@param key string
---@param by? integer Default 1; may be negative.
---@return integer value The new value.
function kv.incr(key, by) end

---Compare-and-swap: writes `new` only if the current value equals `expected`.
---@param key string
---@param expected any The value the key must have now; nil means "must be absent".
---@param new any The value to write; nil deletes the key.
---@return boolean swapped
function kv.cas(key, expected, new) end

---Lists keys in order, one page at a time.
---@param options? picloud.KvListOptions
---@return picloud.KvPage
function kv.list(options) end

---@class picloud.KvSetOp
---@field op "set"
---@field key string
---@field value any
---@field ttl? number

---@class picloud.KvDeleteOp
---@field op "delete"
---@field key string

---@class picloud.KvIncrOp
---@field op "incr"
---@field key string
---@field by? integer Default 1.

---@class picloud.KvCasOp
---@field op "cas"
---@field key string
---@field expected any nil means "must be absent".
---@field new any nil deletes.

---@alias picloud.KvOp picloud.KvSetOp|picloud.KvDeleteOp|picloud.KvIncrOp|picloud.KvCasOp

---Applies several ops all-or-nothing. A `cas` op whose `expected` does not
---match fails the whole batch with `atomic_cas_failed` (nothing is written).
---Results, in op order: `set` → true, `delete` → existed (boolean),
---`incr` → the new integer, `cas` → swapped (boolean).
---@param ops picloud.KvOp[]
---@return (boolean|integer)[]
function kv.atomic(ops) end

---------------------------------------------------------------------------
-- docs
---------------------------------------------------------------------------

---JSON documents in named collections (see README "Documents"). Errors are
---raised as "<code>: <message>" (`invalid_query`, `unique_violation`,
---`doc_exists`, `value_too_large`, `query_too_broad`, ...).
docs = {}

---@class picloud.FindOptions
---@field sort? string|string[] field paths; "-age" sorts descending
---@field limit? integer 1..1000, default 100
---@field cursor? string the previous page's cursor
---@field fields? string[] return only these fields (plus _id)
---@field explain? boolean add `explain` (plan, index, docs_examined, ...)

---@class picloud.FindPage
---@field items table[] the documents (each with `_id`)
---@field cursor? string nil on the last page
---@field explain? table only when asked

---Inserts a document; returns its id (time-ordered), or `doc._id` if given.
---@param collection string
---@param doc table
---@return string
function docs.insert(collection, doc) end

---@param collection string
---@param id string
---@return table|nil
function docs.get(collection, id) end

---Merges `patch` into the document (objects merge; `json.null` removes a
---field). Returns false when there is no such document.
---@param collection string
---@param id string
---@param patch table
---@return boolean
function docs.update(collection, id, patch) end

---@param collection string
---@param id string
---@param doc table
---@return boolean
function docs.replace(collection, id, doc) end

---@param collection string
---@param id string
---@return boolean existed
function docs.delete(collection, id) end

---@param collection string
---@param query? table field paths and $eq $ne $gt $gte $lt $lte $in $nin $exists $prefix $contains $and $or $not
---@param options? picloud.FindOptions
---@return picloud.FindPage
function docs.find(collection, query, options) end

---@param collection string
---@param query? table
---@return integer
function docs.count(collection, query) end

---------------------------------------------------------------------------
-- log
---------------------------------------------------------------------------

---Writes to the app's log (see `picloud logs`). Arguments are converted with
---`tostring` (so `__tostring` works) and joined by tabs, like `print`.
---Messages longer than 16 KiB are truncated.
log = {}

---@param ... any
function log.debug(...) end

---@param ... any
function log.info(...) end

---@param ... any
function log.warn(...) end

---@param ... any
function log.error(...) end

---Same as `log.info`.
---@param ... any
function print(...) end

---------------------------------------------------------------------------
-- secrets
---------------------------------------------------------------------------

---The app's secrets, set by an operator with `picloud secrets set APP NAME`
---(the value is read from stdin). They are encrypted in the cluster's log and
---on disk; a script only ever reads them.
secrets = {}

---Returns the secret's value (a string holding exactly its bytes), or `nil`
---when the app has no secret of that name. Raises `secret_key_mismatch` when
---this node's master key cannot open it (never garbage).
---@param name string
---@return string|nil
function secrets.get(name) end

---------------------------------------------------------------------------
-- http (outbound requests)
---------------------------------------------------------------------------

---Outbound HTTP requests. The script waits without holding a script thread
---(other invocations keep running); the wait counts against the script's
---wall-clock timeout, never its instruction budget, and a request never waits
---longer than the script has left.
---
---The node's SSRF guard refuses (`http_blocked`, naming the address class)
---anything but http/https, and every address in loopback, private, link-local
---(cloud metadata), shared, multicast, reserved and unique-local space,
---however it is spelled (`2130706433`, `0x7f000001`, `127.1`,
---`[::ffff:127.0.0.1]`, `localhost.`) or whatever a name resolves to: every
---address of a name is checked (one refused address refuses the name) and the
---connection goes to a checked address. Only the operator opens private
---targets (`http_out_allow`).
---
---Errors, raised as `"<code>: <message>"`: `http_blocked`, `http_timeout`,
---`http_too_large` (request body or response over the node's limit),
---`http_busy` (too many requests in flight for the app or the node: fails at
---once, never queues), `http_failed` (DNS, connect, TLS or protocol, with
---the reason), `invalid_field` (a bad URL, method or header, or `timeout_ms`
---over the node's maximum).
---
---In a trigger run, requests are sent as they are made (unlike kv writes,
---they cannot wait for the run's commit): a retried run sends them again, so
---pass `ctx.delivery_id` as an idempotency key (e.g. an `Idempotency-Key`
---header) to APIs that accept one.
http = {}

---@class picloud.HttpOptions
---@field method? string Default `"GET"` (any case).
---@field url string http:// or https:// only.
---@field headers? table<string, string|number|string[]> Request headers; a list sends the header once per value. `host`, `content-length`, `transfer-encoding`, `connection` and the other framing headers are the client's.
---@field body? string The raw request body.
---@field json? any Sent as JSON (`json.encode` rules); `content-type` defaults to `application/json`. Not with `body`.
---@field timeout_ms? integer Default the node's `http_out_timeout_ms` (10 s); at most `http_out_timeout_max_ms` (60 s).
---@field redirects? integer Redirects to follow, 0 to 5 (default 0: a 3xx is returned as it is). Every hop is checked by the guard again; 303, and 301/302 after a POST, continue as a GET without a body; `authorization` and `cookie` are not sent to another origin.

---@class picloud.HttpResponse
---@field status integer
---@field headers table<string, string> Names in lower case. A repeated header's values are joined with ", " in arrival order, except `set-cookie`, whose values are joined with "\n" (cookies hold commas).
---@field body string The raw body (may be binary), at most the node's `http_out_response_bytes_max` (5 MiB; more is `http_too_large`).
---@field json any|nil The decoded body when `content-type` is `application/json` or `+json` and it parses; nil otherwise.

---Sends a request.
---@param options picloud.HttpOptions
---@return picloud.HttpResponse
function http.request(options) end

---`http.request` with method GET.
---@param url string
---@param options? picloud.HttpOptions Without `url`, `method`, `body`, `json`.
---@return picloud.HttpResponse
function http.get(url, options) end

---`http.request` with method POST: a string `body` is sent as it is, a table
---as JSON (`content-type: application/json`).
---@param url string
---@param body? string|table
---@param options? picloud.HttpOptions Without `url`, `method`, `body`, `json`.
---@return picloud.HttpResponse
function http.post(url, body, options) end

---------------------------------------------------------------------------
-- pubsub and realtime
---------------------------------------------------------------------------

---Publishing on the topics the app declares with `[[topic]]` in picloud.toml.
---Raises `topic_not_found` (no `[[topic]]` matches), `invalid_topic` (a bad
---name, or `publish_durable` on a `retain = 0` topic) and `message_too_large`
---(over 64 KiB as JSON).
pubsub = {}

---Delivers `message` to the topic's subscribers connected now, on every
---node, at most once (no log write, no history).
---@param topic string
---@param message any a JSON-representable value
function pubsub.publish(topic, message) end

---Appends `message` to the topic's durable history through the log
---(ordered, kept up to `retain`, resumable by `Last-Event-ID`). Inside a
---trigger run it is committed with the run's writes and returns nil.
---@param topic string
---@param message any a JSON-representable value
---@return string|nil id the message's position, `<epoch>-<seq>`
function pubsub.publish_durable(topic, message) end

realtime = {}

---@class RealtimeTokenOptions
---@field ttl? number seconds the token is valid (default 3600, at most 86400)
---@field subject? string who the token is for (carried in the token)

---A token that lets a client subscribe to `topic` at
---`GET /_/realtime/<app>/<topic>` (`Authorization: Bearer` or `?token=`).
---@param topic string
---@param options? RealtimeTokenOptions
---@return string token
function realtime.token(topic, options) end

---------------------------------------------------------------------------
-- email
---------------------------------------------------------------------------

---Outbound mail. `email.send` queues the message in the replicated outbox
---and returns at once: the leader sends it through `--smtp-relay`, retries
---a 4xx or network failure with backoff (`--email-attempts-max`), and
---dead-letters it after the last attempt or at once on a 5xx reply (code
---`bounced`, the reply as the error). Without a relay the mail is captured
---(`picloud mail list APP`). Raises `email_invalid` (an address that does
---not parse, a line break in a header field, no recipient, no body, a
---`from` not on the domain of `--mail-from`) or `email_too_large` (over
---`--email-bytes-max` or `--email-recipients-max`). Inside a trigger run a
---send is queued at once: a retried run sends again.
email = {}

---@class picloud.EmailAttachment
---@field filename string 1-255 bytes
---@field content_type? string default `application/octet-stream`
---@field data string the content (binary-safe)

---@class picloud.Email
---@field to? string|string[] `a@b.c` or `Name <a@b.c>`
---@field cc? string|string[]
---@field bcc? string|string[] in the envelope only, never a header
---@field subject? string at most 998 bytes
---@field text? string plain body
---@field html? string HTML body (with text: multipart/alternative)
---@field from? string default `--mail-from`; must be on its domain
---@field reply_to? string
---@field attachments? picloud.EmailAttachment[]

---Queues a message; at least one recipient and one of text/html.
---@param message picloud.Email
---@return string delivery_id `<app>/<n>`, the same on every retry
function email.send(message) end

---------------------------------------------------------------------------
-- files
---------------------------------------------------------------------------

---The app's files: content in replicated 1 MiB blocks outside the log,
---metadata through the log. Paths are 1-1024 bytes of UTF-8 without a
---leading `/`, a NUL or control character, an empty, `.` or `..` segment
---(else `invalid_path`). Raises `file_too_large` (over `--file-bytes-max`;
---`files.get`/`files.put` of more than `--file-inline-read-max`, 8 MiB:
---use a signed URL), `quota_exceeded` (the app's bytes or files),
---`disk_full`, `replicas_unavailable`. Inside a trigger run, puts and deletes
---happen at once (not with the run's completion): a retried run repeats them.
files = {}

---@class picloud.FileStat
---@field path string
---@field size integer bytes
---@field content_type string `application/octet-stream` unless given
---@field etag string `"` + hex SHA-256 of the content + `"`
---@field updated_ms integer last put, ms since the epoch

---@class picloud.File: picloud.FileStat
---@field data string the content (binary-safe)

---@class picloud.FilePutOptions
---@field content_type? string `type/subtype`, at most 255 bytes

---Stores `data` at `path`, replacing any file there.
---@param path string
---@param data string
---@param options? picloud.FilePutOptions
---@return picloud.FileStat
function files.put(path, data, options) end

---The file with its content, or nil.
---@param path string
---@return picloud.File|nil
function files.get(path) end

---The file's stat, or nil.
---@param path string
---@return picloud.FileStat|nil
function files.stat(path) end

---Deletes the file.
---@param path string
---@return boolean found
function files.delete(path) end

---@class picloud.FileListOptions
---@field prefix? string only paths starting with it
---@field limit? integer 1 to 1000 (default 100; else `invalid_limit`)
---@field cursor? string the `cursor` of the previous page

---@class picloud.FileListPage
---@field files picloud.FileStat[] in path order
---@field cursor string|nil pass it to get the next page; nil on the last

---One page of the app's files.
---@param options? picloud.FileListOptions
---@return picloud.FileListPage
function files.list(options) end

---@class picloud.FileUrlOptions
---@field ttl? number seconds the URL is valid
---@field method? "GET"|"PUT" GET (and HEAD) downloads, PUT uploads; default GET
---@field content_type? string PUT only: the `Content-Type` the upload must carry
---@field max_bytes? integer PUT only: the most bytes the upload may send

---A signed URL path (`/_/files/<app>/<path>?...`, no host) that any node
---serves to anyone holding it until it expires (`url_expired`); a changed
---character fails with `url_invalid`.
---@param path string
---@param options? picloud.FileUrlOptions
---@return string url
function files.url(path, options) end

---------------------------------------------------------------------------
-- users
---------------------------------------------------------------------------

---The app's end users and their sessions. Emails are trimmed and
---lower-cased (`email_invalid`, `email_taken`); passwords are 8 to 256
---bytes and not a common one (`password_weak`), stored only as argon2id
---hashes that never leave the node; roles are 1-64 characters of
---`a-z0-9_-` (`invalid_role`). Hashing is bounded per node: past its queue,
---`auth_busy`. Inside a trigger run, writes happen at once (not with the
---run's completion).
users = {}

---@class picloud.User
---@field id string
---@field email string normalised
---@field verified boolean
---@field roles string[]
---@field data table a JSON object
---@field created_ms integer
---@field last_login_ms integer 0 before the first login

---@class picloud.NewUser
---@field email string
---@field password string
---@field data? table a JSON object (at most 16 KiB as JSON by default)
---@field roles? string[]

---@param fields picloud.NewUser
---@return picloud.User
function users.create(fields) end

---@param id string
---@return picloud.User|nil
function users.get(id) end

---@param query {email: string}
---@return picloud.User|nil
function users.find(query) end

---@class picloud.UserPatch
---@field email? string
---@field verified? boolean
---@field roles? string[] replaces the set
---@field data? table replaces the data

---Raises `user_not_found` when there is no such user.
---@param id string
---@param patch picloud.UserPatch
---@return picloud.User
function users.update(id, patch) end

---Deletes the user and revokes all its sessions.
---@param id string
---@return boolean found
function users.delete(id) end

---@param options? {cursor?: string, limit?: integer} limit 1 to 1000 (default 100; else `invalid_limit`)
---@return {users: picloud.User[], cursor: string|nil}
function users.list(options) end

---Replaces the password and revokes every session of the user.
---@param id string
---@param password string
---@return boolean
function users.set_password(id, password) end

---A new session: `{token=, user=}`, or `nil, "invalid_credentials"` for an
---unknown email or a wrong password (the two take the same time).
---@param email string
---@param password string
---@return {token: string, user: picloud.User}|nil session
---@return string|nil code
function users.login(email, password) end

---The session's user, or nil (unknown, expired or revoked: a revocation
---anywhere in the cluster is seen here within a second).
---@param token string
---@return picloud.User|nil
function users.verify(token) end

---@param token string
---@return boolean found
function users.logout(token) end

---@param id string
---@return integer revoked how many sessions ended
function users.logout_all(id) end

---@param id string
---@param role string
---@return boolean added false when already held
function users.add_role(id, role) end

---@param id string
---@param role string
---@return boolean removed false when not held
function users.remove_role(id, role) end

---@param id string
---@param role string
---@return boolean
function users.has_role(id, role) end

---Invites `email` (with `roles`): stores a single-use invitation (valid for
---the node's `auth_invite_ttl_ms`) and mails it with the app's
---`[auth.templates.invite]`. Accepting it (`POST /_/auth/<app>/accept-invite`)
---creates the user, verified, with these roles. `email_taken` when the
---address already has an account.
---@param invitation {email: string, roles?: string[]}
---@return {email: string, roles: string[], expires_ms: integer, link: string}
function users.invite(invitation) end

---------------------------------------------------------------------------
-- json
---------------------------------------------------------------------------

---JSON encoding rules:
--- * A table with keys exactly 1..n (n >= 1) is an array.
--- * An empty table is `{}`; use `json.array()` for `[]`. Arrays decoded from
---   JSON keep their array mark, so `[]` round-trips.
--- * Other tables are objects: string keys, plus integer keys written as
---   strings (`{[1]="a",[3]="c"}` → `{"1":"a","3":"c"}`). Other key types are errors.
--- * `nil` and `json.null` encode as `null`; `null` decodes as `json.null`
---   (so arrays keep their length and fields stay visible).
--- * Integers stay integers, floats must be finite, strings must be UTF-8.
--- * Nesting deeper than 128 levels, cycles, functions, coroutines are errors.
--- * Object keys are written in sorted order.
json = {}

---The JSON `null` value (a light userdata); compare with `==`.
---@type lightuserdata
json.null = nil

---@param value any
---@return string
function json.encode(value) end

---Raises an error on invalid JSON.
---@param text string
---@return any
function json.decode(text) end

---Marks `t` (or a new empty table) as a JSON array, so it encodes as `[]`
---even when empty.
---@generic T: table
---@param t? T
---@return T
function json.array(t) end

---------------------------------------------------------------------------
-- time
---------------------------------------------------------------------------

time = {}

---Seconds since the Unix epoch, with millisecond precision (like OpenResty's `ngx.now()`).
---@return number
function time.now() end

---Milliseconds since the Unix epoch.
---@return integer
function time.now_ms() end

---------------------------------------------------------------------------
-- crypto, base64, hex
---------------------------------------------------------------------------

---Byte helpers for webhooks, tokens and ids. Pure (no service call), but
---their work counts against the instruction budget in proportion to the
---bytes they read and write.
crypto = {}

---@class picloud.DigestOptions
---@field raw? boolean the 32 raw bytes instead of 64 lowercase hex digits

---SHA-256 of `s`: lowercase hex, or the raw bytes with `{raw = true}`.
---@param s string
---@param opts? picloud.DigestOptions
---@return string
function crypto.sha256(s, opts) end

---HMAC-SHA256 of `s` under `key` (any length): lowercase hex, or raw bytes
---with `{raw = true}`.
---@param key string
---@param s string
---@param opts? picloud.DigestOptions
---@return string
function crypto.hmac_sha256(key, s, opts) end

---`n` bytes (1 to 1024) from the operating system's CSPRNG.
---@param n integer
---@return string
function crypto.random_bytes(n) end

---@class picloud.UuidOptions
---@field version? 4|7 4 (random, the default) or 7 (time-ordered)

---A UUID in its 36-character lowercase form. Version 7 ids start with the
---millisecond they were made and sort in creation order.
---@param opts? picloud.UuidOptions
---@return string
function crypto.uuid(opts) end

---Whether `a` and `b` hold the same bytes, in time that depends only on
---their lengths: compare signatures and tokens with it, never with `==`.
---@param a string
---@param b string
---@return boolean
function crypto.equal(a, b) end

---@class picloud.Base64Options
---@field url? boolean the URL-safe alphabet (`-`, `_`), no padding written

base64 = {}

---@param s string
---@param opts? picloud.Base64Options
---@return string
function base64.encode(s, opts) end

---Accepts the text with or without `=` padding; raises `invalid_encoding`
---for anything else that is not base64 of the chosen alphabet.
---@param s string
---@param opts? picloud.Base64Options
---@return string
function base64.decode(s, opts) end

hex = {}

---Lowercase hex digits, two per byte.
---@param s string
---@return string
function hex.encode(s) end

---Accepts either case; raises `invalid_encoding` for an odd length or a
---non-hex character.
---@param s string
---@return string
function hex.decode(s) end

---------------------------------------------------------------------------
-- Restricted standard functions
---------------------------------------------------------------------------

---Only `collectgarbage("count")` (KiB in use by this app's VM) is allowed;
---any other option raises an error.
---@param opt "count"
---@return number
function collectgarbage(opt) end

---------------------------------------------------------------------------
-- Triggers: a `[[trigger]]` script returns `function(event, ctx)`
---------------------------------------------------------------------------

---@class picloud.TriggerEvent
---@field kind "kv"|"docs"|"cron"|"pubsub"|"files"|"email"|"dead_letter"
---@field collection? string docs: the collection written.
---@field id? string docs: the document's id.
---@field key? string kv: the key written.
---@field op? "set"|"delete"|"insert"|"update"|"put" kv: "set"/"delete" (incr and a swapping cas are "set"); docs: "insert"/"update"/"delete"; files: "put"/"delete".
---@field path? string files: the file's path.
---@field size? integer files: its size in bytes (the deleted file's for a delete).
---@field etag? string files: its ETag.
---@field content_type? string files: its content type.
---@field old? any kv/docs: the value or document before (nil if absent).
---@field new? any kv/docs: the value or document after (nil after a delete).
---@field scheduled_ms? integer cron: the slot this run is for (ms since the epoch).
---@field trigger? string dead_letter: the trigger whose run was dead-lettered.
---@field delivery_id? string dead_letter: that run's delivery id.
---@field code? "failed"|"trigger_loop"|"trigger_removed" dead_letter: why.
---@field error? string dead_letter: the last error.
---@field recipient? string email: the envelope address the message reached (lower case).
---@field message_id? string email: the Message-ID header (made up when absent).
---@field from? string email: the From address (the envelope sender when absent).
---@field to? string[] email: the To addresses.
---@field subject? string email: the subject ("" when absent).
---@field text? string email: the text/plain body, if sent.
---@field html? string email: the text/html body, if sent.
---@field headers? {name: string, value: string}[] email: every header, in order.
---@field attachments? picloud.MailAttachment[] email: its attachments.

---@class picloud.MailAttachment
---@field filename string
---@field content_type string
---@field size integer Bytes.
---@field data? string Base64 of the bytes (`base64.decode(a.data)`), for attachments up to 1 MiB.
---@field encoding? "base64" Set with `data`.
---@field path? string A file of the app holding a larger attachment (under `mail/`); delete it when done.

---@class picloud.TriggerContext
---@field app string
---@field trigger string This trigger's name.
---@field delivery_id string Stable across retries of this run: use it to make outside effects idempotent.
---@field attempt integer 1 on the first run, 2 on the first retry, ...

---The shape of a trigger script's handler. Its kv writes commit together with
---the run's completion, once; an error fails the run (retried with backoff,
---then dead-lettered).
---@alias picloud.TriggerHandler fun(event: picloud.TriggerEvent, ctx: picloud.TriggerContext)

---Loads module `name` once per VM and returns its result: `"util.strings"` is
---`modules/util/strings.lua` (or `modules/util/strings/init.lua`), `"@lib.sub"`
---the `sub.lua` of a shared library pinned in picloud.toml `[libs]`.
---@param name string
---@return any
function require(name) end
