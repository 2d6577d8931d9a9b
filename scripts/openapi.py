#!/usr/bin/env python3
"""Writes src/http/openapi.json (the OpenAPI document the daemon serves).

Kept as a generator so the document stays valid JSON and consistent; the tests
`every_openapi_path_is_routed_and_every_route_documented` and
`openapi_documents_every_error_code` check it against the routes and the
error codes. The daemon serves it with `error.code` completed from the
`ErrorCode` enum (`src/http/error.rs`).
"""
import json, pathlib

err = {"$ref": "#/components/responses/Error"}
def op(summary, responses, body=None, params=None, tags=None, security=None, desc=None):
    # Every operation can meet these: another method on its path (405), a
    # bug (500), the server's request timeout (503 timeout).
    responses = {**responses, "405": err, "500": err}
    responses.setdefault("503", err)
    o = {"summary": summary, "responses": responses}
    if desc: o["description"] = desc
    if body: o["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}}}
    if params: o["parameters"] = params
    if tags: o["tags"] = tags
    if security is not None: o["security"] = security
    return o
def ok(schema, code="200", desc="OK"):
    return {code: {"description": desc, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}}
def q(name, desc, schema=None, required=False):
    return {"name": name, "in": "query", "required": required, "description": desc, "schema": schema or {"type": "string"}}
def p(name, desc, schema=None):
    return {"name": name, "in": "path", "required": True, "description": desc, "schema": schema or {"type": "string"}}
order_id = p("order_id", "Order id (positive integer)", {"type": "integer", "minimum": 1})
ops_sec = [{"opsToken": []}, {"opsSession": [], "opsCsrf": []}]
status_enum = ["PENDING", "PENDING_REVIEW", "CONFIRMED", "FULFILLED", "RETURNED", "CANCELLED"]
money = {"type": "string", "pattern": r"^\d{1,12}(\.\d{1,4})?$", "description": "Decimal string, never a JSON number (e.g. \"19.99\")"}

paths = {
  "/orders": {"post": op("Create an order (idempotent)", {
        **ok("Order", "201", "Created; the same key and body later return this response again (header Idempotent-Replayed: true)"),
        "400": err, "413": err, "415": err, "422": err, "503": err},
      body="OrderCreate", tags=["orders"],
      params=[{"name": "Idempotency-Key", "in": "header", "required": True, "description": "Unique per order (X-Idempotency-Key is accepted too). Reusing it with another body is a 422.", "schema": {"type": "string", "minLength": 1, "maxLength": 255}}],
      desc="Creates the order, its items, its first history row and the order.created.v1 outbox row in one transaction, and starts its saga.")},
  "/orders/search": {"get": op("Search orders (newest first, keyset pagination)", {**ok("OrderPage"), "422": err}, tags=["orders"], params=[
      q("status", "Filter by status", {"type": "string", "enum": status_enum}),
      q("tenant_region", "Filter by tenant region"), q("customer_id", "Filter by customer"),
      q("created_from", "Created at or after (RFC 3339)", {"type": "string", "format": "date-time"}),
      q("created_to", "Created before (RFC 3339)", {"type": "string", "format": "date-time"}),
      q("limit", "Page size (1-100, default 20)", {"type": "integer", "minimum": 1, "maximum": 100}),
      q("cursor", "next_cursor of the previous page (opaque; keep the same filters)")])},
  "/orders/{order_id}": {"get": op("Read an order with its items", {**ok("Order"), "404": err}, params=[order_id], tags=["orders"],
      desc="updated_at lets readers in other regions judge staleness; ETag carries the version.")},
  "/orders/{order_id}/status": {"post": op("Change the status of an order", {**ok("Order"), "404": err, "409": err, "422": err},
      body="StatusChange", params=[order_id], tags=["orders"],
      desc="409 codes: illegal_transition (not in the table), version_conflict (expected_version differs), concurrent_modification (another change won), saga_in_progress (the saga drives the order now). CANCELLED (and PENDING from PENDING_REVIEW) go through the saga and compensate.")},
  "/healthz": {"get": op("Liveness", {"200": {"description": "The process is up"}}, tags=["operations"])},
  "/readyz": {"get": op("Readiness (database reachable)", {"200": {"description": "Ready"}, "503": err}, tags=["operations"])},
  "/metrics": {"get": op("Prometheus metrics (OpenMetrics text)", {"200": {"description": "Metrics", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}}, tags=["operations"])},
  "/openapi.json": {"get": op("This document", {"200": {"description": "OpenAPI 3.1"}}, tags=["operations"])},
  "/ops/timeouts/sweep": {"post": op("Fire every due timer now (for external schedulers)", {**ok("SweepReport"), "401": err, "404": err}, tags=["ops"], security=ops_sec)},
}

schemas = {
  "OrderItemCreate": {"type": "object", "additionalProperties": False, "required": ["sku", "qty", "unit_price"], "properties": {
      "sku": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[!-~]+$"},
      "qty": {"type": "integer", "minimum": 1, "maximum": 10000},
      "unit_price": {**money, "description": "Decimal string, at most the currency's minor units; 0 to 1000000"}}},
  "OrderCreate": {"type": "object", "additionalProperties": False, "required": ["customer_id", "tenant_region", "currency", "items"], "properties": {
      "customer_id": {"type": "string", "minLength": 1, "maxLength": 64},
      "tenant_region": {"type": "string", "minLength": 1, "maxLength": 32, "pattern": "^[A-Za-z0-9_-]+$"},
      "currency": {"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 code"},
      "items": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"$ref": "#/components/schemas/OrderItemCreate"}, "description": "Distinct SKUs; total at most 100000000"}}},
  "OrderItem": {"type": "object", "properties": {"line_no": {"type": "integer"}, "sku": {"type": "string"}, "qty": {"type": "integer"}, "unit_price": money, "line_total": money}},
  "Order": {"type": "object", "required": ["order_id", "customer_id", "tenant_region", "currency", "status", "total_amount", "item_count", "version", "created_at", "updated_at"], "properties": {
      "order_id": {"type": "integer"}, "customer_id": {"type": "string"}, "tenant_region": {"type": "string"}, "currency": {"type": "string"},
      "status": {"type": "string", "enum": status_enum}, "total_amount": money, "item_count": {"type": "integer"},
      "version": {"type": "integer", "description": "Increments on every change; send it back as expected_version"},
      "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"},
      "items": {"type": "array", "items": {"$ref": "#/components/schemas/OrderItem"}, "description": "Absent in search results"}}},
  "OrderPage": {"type": "object", "properties": {"orders": {"type": "array", "items": {"$ref": "#/components/schemas/Order"}}, "next_cursor": {"type": ["string", "null"]}}},
  "StatusChange": {"type": "object", "additionalProperties": False, "required": ["to_status", "actor"], "properties": {
      "to_status": {"type": "string", "enum": status_enum},
      "reason_code": {"type": "string", "pattern": "^[A-Z0-9_]{1,64}$"},
      "comment": {"type": "string", "maxLength": 1000},
      "actor": {"type": "string", "minLength": 1, "maxLength": 128},
      "expected_version": {"type": "integer", "minimum": 1}}},
  "SweepReport": {"type": "object", "properties": {"fired": {"type": "integer"}, "skipped": {"type": "integer"}}},
  "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message", "details"], "properties": {
      "code": {"type": "string", "description": "Stable machine-readable code"}, "message": {"type": "string"},
      "details": {"description": "Code-specific details, e.g. the invalid fields with JSON pointers; null when none"}}}}},
}

doc = {
  "openapi": "3.1.0",
  "info": {"title": "order-saga", "version": "1", "description": "System of record and saga orchestrator for e-commerce orders. Errors always have the shape {\"error\": {\"code\", \"message\", \"details\"}}."},
  "paths": paths,
  "components": {"schemas": schemas,
     "responses": {"Error": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
     "securitySchemes": {"opsToken": {"type": "http", "scheme": "bearer", "description": "ORDER_SAGA_OPS_TOKEN; without it the ops endpoints do not exist"},
       "opsSession": {"type": "apiKey", "in": "cookie", "name": "order_saga_ops", "description": "Ops console session (POST /ops/ui/session); the actor of every action is the name given at sign-in"},
       "opsCsrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token", "description": "The console session's CSRF token (from GET or POST /ops/ui/session); required with the session cookie"}}},
}
extra = pathlib.Path(__file__).with_name("openapi_ops.py")
if extra.exists():
    ns = {"op": op, "ok": ok, "q": q, "p": p, "err": err, "ops_sec": ops_sec, "paths": paths, "schemas": schemas, "order_id": order_id}
    exec(extra.read_text(), ns)
out = pathlib.Path(__file__).resolve().parent.parent / "src/http/openapi.json"
out.write_text(json.dumps(doc, indent=2) + "\n")
print(f"wrote {out}")
