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
schemas["OpsAction"] = {"type": "object", "required": ["action", "expected_version", "actor", "reason"], "properties": {
    **action_props,
    "expected_version": {"type": "integer", "description": "The saga version you looked at"},
    "actor": {"type": "string", "maxLength": 128}, "reason": {"type": "string", "maxLength": 1000},
    "dry_run": {"type": "boolean"}}}
schemas["OpsBulk"] = {"type": "object", "required": ["filter", "action", "actor", "reason"], "properties": {
    "filter": {"type": "object", "description": "state, older_than, tenant_region, definition_version, quarantined, stuck, terminal"},
    "action": {"type": "object", "properties": action_props, "required": ["action"]},
    "actor": {"type": "string"}, "reason": {"type": "string"}, "dry_run": {"type": "boolean"},
    "limit": {"type": "integer", "minimum": 1, "maximum": 10000}}}
