# The /ops part of the OpenAPI document (executed by scripts/openapi.py).
saga_id = p("order_id", "Order id of the saga", {"type": "integer", "minimum": 1})
filters = [
    q("state", "Only this saga state"),
    q("older_than", "At least this long in the current state, e.g. 15m"),
    q("tenant_region", "Only this tenant region"),
    q("definition_version", "Only sagas started on this definition version", {"type": "integer"}),
    q("quarantined", "Only quarantined (true) or not (false)", {"type": "boolean"}),
    q("stuck", "Only sagas over their state's max_dwell", {"type": "boolean"}),
    q("terminal", "Include terminal states", {"type": "boolean"}),
    q("timers_overdue", "Only sagas with a timer more than 30s past due", {"type": "boolean"}),
    q("unpublished", "Only sagas with outbox rows not yet published", {"type": "boolean"}),
    q("dead_lettered_within", "Only sagas with an event dead-lettered within this long, e.g. 1h"),
]
generic = {"description": "JSON", "content": {"application/json": {"schema": {"type": "object"}}}}
paths["/ops/sagas"] = {"get": op("List sagas, oldest in their state first", {"200": generic, "401": err, "404": err, "422": err},
    params=filters + [q("limit", "1-500 (default 50)", {"type": "integer"}), q("cursor", "next_cursor of the previous page")],
    tags=["ops"], security=ops_sec)}
paths["/ops/sagas/{order_id}"] = {"get": op("One saga: order, state, transitions, history, timers, unpublished outbox, inbox, parked events",
    {"200": generic, "401": err, "404": err}, params=[saga_id], tags=["ops"], security=ops_sec)}
paths["/ops/sagas/{order_id}/actions"] = {"post": op("Act on one saga (validated, version-guarded, audited; dry_run shows the effects)",
    {"200": generic, "401": err, "404": err, "409": err, "422": err}, body="OpsAction", params=[saga_id], tags=["ops"], security=ops_sec,
    desc="409 codes: stale_version (expected_version differs), not_allowed (not in the definition, not armed, quarantined, …).")}
paths["/ops/overview"] = {"get": op("The console's overview: sagas per state (stuck, oldest, max_dwell), quarantined, overdue timers, outbox backlog, dead letters of the last hour, this replica's consumer lag",
    {"200": generic, "401": err, "403": err, "404": err}, tags=["ops"], security=ops_sec)}
paths["/ops/drain"] = {"get": op("In-flight sagas per definition version and state", {"200": generic, "401": err, "404": err}, tags=["ops"], security=ops_sec)}
paths["/ops/bulk"] = {"post": op("Bulk action over a filter: dry_run previews the count; otherwise 202 with a job id",
    {"200": generic, "202": generic, "401": err, "404": err, "422": err}, body="OpsBulk", tags=["ops"], security=ops_sec)}
paths["/ops/jobs/{job_id}"] = {"get": op("Progress of a bulk job (on the replica that runs it)", {"200": generic, "401": err, "404": err},
    params=[p("job_id", "Job id")], tags=["ops"], security=ops_sec)}
paths["/ops/audit"] = {"get": op("Audit trail of ops actions, newest first", {"200": generic, "401": err, "404": err, "422": err},
    params=[q("order_id", "Only this order", {"type": "integer"}), q("limit", "1-1000 (default 100)", {"type": "integer"})], tags=["ops"], security=ops_sec)}
action_props = {
    "action": {"type": "string", "enum": ["retry_step", "fire_timer", "reschedule_timer", "cancel_timer", "cancel", "force", "release", "skip_poison"]},
    "timer": {"type": "string", "description": "fire_timer, reschedule_timer, cancel_timer"},
    "at": {"type": "string", "format": "date-time", "description": "reschedule_timer"},
    "after": {"type": "string", "description": "reschedule_timer, e.g. 30m"},
    "event": {"type": "string", "description": "force: a manual event of the definition"},
}
actor_doc = {"type": "string", "maxLength": 128, "description": "Who acts: required with the bearer token; with a console session it is the name given at sign-in (a value here is ignored)"}
schemas["OpsAction"] = {"type": "object", "required": ["action", "expected_version", "reason"], "properties": {
    **action_props,
    "expected_version": {"type": "integer", "description": "The saga version you looked at"},
    "actor": actor_doc, "reason": {"type": "string", "maxLength": 1000},
    "dry_run": {"type": "boolean"}}}
schemas["OpsBulk"] = {"type": "object", "required": ["filter", "action", "reason"], "properties": {
    "filter": {"type": "object", "description": "state, older_than, tenant_region, definition_version, quarantined, stuck, terminal, timers_overdue, unpublished, dead_lettered_within"},
    "action": {"type": "object", "properties": action_props, "required": ["action"]},
    "actor": actor_doc, "reason": {"type": "string"}, "dry_run": {"type": "boolean"},
    "limit": {"type": "integer", "minimum": 1, "maximum": 10000}}}

# The ops console (served by the daemon; disabled with /ops).
html = {"description": "The console page", "content": {"text/html": {"schema": {"type": "string"}}}}
paths["/ops/ui"] = {"get": op("The ops console (sign-in, overview, sagas, one saga, actions, bulk)", {"200": html, "404": err}, tags=["ops console"])}
paths["/ops/ui/"] = {"get": op("The ops console (same page)", {"200": html, "404": err}, tags=["ops console"])}
paths["/ops/ui/assets/{file}"] = {"get": op("A console asset embedded in the binary (app.js, app.css, icon.svg)",
    {"200": {"description": "The asset"}, "404": err}, params=[p("file", "Asset name")], tags=["ops console"])}
session = {"description": "The signed-in operator and the session's CSRF token", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OpsSession"}}}}
paths["/ops/ui/session"] = {
    "get": op("The current console session (from its cookie)", {"200": session, "401": err, "404": err}, tags=["ops console"]),
    "post": op("Sign in: trades the ops token and the operator's name for a session cookie (HttpOnly, SameSite=Strict)",
        {"200": session, "401": err, "404": err, "415": err, "422": err}, body="OpsSignIn", tags=["ops console"]),
    "delete": op("Sign out: ends the session on every replica (needs X-CSRF-Token)", {"204": {"description": "Signed out"}, "403": err, "404": err}, tags=["ops console"]),
}
schemas["OpsSignIn"] = {"type": "object", "required": ["token", "actor"], "properties": {
    "token": {"type": "string", "description": "ORDER_SAGA_OPS_TOKEN"},
    "actor": {"type": "string", "maxLength": 128, "description": "Recorded as the actor of every action of the session"}}}
schemas["OpsSession"] = {"type": "object", "required": ["actor", "csrf_token", "expires_at"], "properties": {
    "actor": {"type": "string"}, "csrf_token": {"type": "string", "description": "Send as X-CSRF-Token on every /ops request"},
    "expires_at": {"type": "string", "format": "date-time"}, "idle_timeout_seconds": {"type": "integer"}}}
