#!/usr/bin/env python3
"""Writes schemas/asyncapi.json (AsyncAPI 3.0) from schemas/*.avsc.

The test `contracts::tests::asyncapi_describes_every_message` checks it is current.
"""
import json, pathlib

root = pathlib.Path(__file__).resolve().parent.parent
schemas = root / "schemas"
direction = {
    "order.created.v1": "send", "order.status.changed.v1": "send", "inventory.reserve.v1": "send",
    "inventory.release.v1": "send", "payment.authorize.v1": "send", "payment.void.v1": "send",
    "order.item.backordered.v1": "send", "order.attention.required.v1": "send",
    "inventory.reserved.v1": "receive", "inventory.reservation.failed.v1": "receive",
    "payment.authorized.v1": "receive", "payment.failed.v1": "receive",
}
headers = {
    "type": "object",
    "required": ["event_id", "event_type"],
    "properties": {
        "event_id": {"type": "string", "description": "Unique id; consumers de-duplicate on it"},
        "event_type": {"type": "string", "description": "The message name"},
        "traceparent": {"type": "string", "description": "W3C trace context"},
    },
}
events = {"order.created.v1", "order.status.changed.v1", "order.item.backordered.v1", "order.attention.required.v1"}
partitioning = {
    "events": (
        "Partitioned by tenant region (ORDER_SAGA_PARTITIONING=tenant_region, the default): a region listed in "
        "ORDER_SAGA_REGION_PARTITIONS (e.g. eu-west=0-3,us-east=4-7) owns that partition range, and an order goes to "
        "first + order_id mod width of it; any other region goes to one partition chosen by FNV-1a-64 of the region "
        "name over the partitions no region owns. All messages of one order share a partition. A regional consumer "
        "assigns itself its region's partitions. With ORDER_SAGA_PARTITIONING=key the producer hashes the key."
    ),
    "commands": (
        "Partitioned by the hash of the key (order id) by default (ORDER_SAGA_COMMAND_PARTITIONING=key); "
        "tenant_region places them like the domain events."
    ),
}
channels, operations, messages = {}, {}, {}
for name in sorted(direction):
    avsc = json.loads((schemas / f"{name}.avsc").read_text())
    mid = avsc["name"]
    messages[mid] = {
        "name": name,
        "title": mid,
        "summary": avsc.get("doc", ""),
        "contentType": "application/vnd.apache.avro+binary",
        "headers": headers,
        "payload": {"schemaFormat": "application/vnd.apache.avro+json;version=1.9.0", "schema": {"$ref": f"./{name}.avsc"}},
        "bindings": {"kafka": {"key": {"type": "string", "description": "order_id as a decimal string"}, "schemaIdLocation": "payload", "schemaIdPayloadEncoding": "confluent", "bindingVersion": "0.5.0"}},
    }
    cid = name.replace(".", "_")
    channels[cid] = {
        "address": name,
        "description": f"Topic {name} (ORDER_SAGA_KAFKA_TOPIC_PREFIX applies). Subject {name}-value."
        + ("" if direction[name] == "receive" else " " + partitioning["events" if name in events else "commands"]),
        "messages": {mid: {"$ref": f"#/components/messages/{mid}"}},
    }
    operations[f"{direction[name]}_{cid}"] = {
        "action": direction[name],
        "channel": {"$ref": f"#/channels/{cid}"},
        "messages": [{"$ref": f"#/channels/{cid}/messages/{mid}"}],
    }
channels["dead_letters"] = {
    "address": "order-saga.dlq",
    "description": "Poison messages, original key and bytes, with dlq_error, dlq_error_kind and dlq_source_* headers. "
    + "Placed like the domain events when the order's region is known, else by the key's hash.",
    "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
}
operations["send_dead_letters"] = {"action": "send", "channel": {"$ref": "#/channels/dead_letters"}, "messages": [{"$ref": "#/channels/dead_letters/messages/DeadLetter"}]}
messages["DeadLetter"] = {"name": "dead_letter", "contentType": "application/octet-stream", "summary": "The original message, unchanged", "payload": {"type": "string", "format": "binary"}}
doc = {
    "asyncapi": "3.0.0",
    "info": {"title": "order-saga", "version": "1", "description": "Events and commands of the order saga. Kafka key = order id; Confluent Avro values. Domain events are partitioned by tenant region (see each channel)."},
    "defaultContentType": "application/vnd.apache.avro+binary",
    "channels": channels,
    "operations": operations,
    "components": {"messages": messages},
}
(schemas / "asyncapi.json").write_text(json.dumps(doc, indent=2) + "\n")
print("wrote schemas/asyncapi.json")
