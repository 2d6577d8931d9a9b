//! A small, explicit validator for JSON request bodies.
//!
//! Serde stops at the first problem and words it for Rust developers
//! ("invalid type: integer `5`, expected a string at line 1 column 30"). Clients
//! of an order API want every problem at once, each with the JSON path of the
//! field and a stable machine-readable code, so request bodies are read as
//! `serde_json::Value` and checked here field by field.

use serde::Serialize;
use serde_json::{Map, Value};

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON Pointer (RFC 6901) to the field, e.g. `/items/0/qty`.
    pub field: String,
    /// Stable code: `required`, `invalid_type`, `too_short`, `too_long`,
    /// `invalid_format`, `out_of_range`, `unknown_field`, `duplicate`, `invalid_value`.
    pub code: &'static str,
    pub message: String,
}

/// Collects errors while reading one JSON object.
pub(crate) struct ObjectReader<'a> {
    path: String,
    obj: Option<&'a Map<String, Value>>,
    allowed: &'static [&'static str],
    pub(crate) errors: &'a mut Vec<FieldError>,
}

impl<'a> ObjectReader<'a> {
    /// Starts reading `value` as an object whose only allowed keys are `allowed`.
    /// Unknown keys are reported (a typo such as `quantity` for `qty` must not be
    /// silently ignored).
    pub(crate) fn new(
        path: &str,
        value: &'a Value,
        allowed: &'static [&'static str],
        errors: &'a mut Vec<FieldError>,
    ) -> Self {
        let obj = value.as_object();
        match obj {
            None => errors.push(FieldError {
                field: path_or_root(path),
                code: "invalid_type",
                message: format!("expected a JSON object, found {}", type_name(value)),
            }),
            Some(map) => {
                for key in map.keys() {
                    if !allowed.contains(&key.as_str()) {
                        errors.push(FieldError {
                            field: format!("{path}/{}", escape(key)),
                            code: "unknown_field",
                            message: format!("unknown field {key:?}; allowed fields: {}", allowed.join(", ")),
                        });
                    }
                }
            }
        }
        ObjectReader { path: path.to_owned(), obj, allowed, errors }
    }

    pub(crate) fn is_object(&self) -> bool {
        self.obj.is_some()
    }

    pub(crate) fn field_path(&self, key: &str) -> String {
        debug_assert!(self.allowed.contains(&key));
        format!("{}/{}", self.path, escape(key))
    }

    pub(crate) fn error(&mut self, key: &str, code: &'static str, message: impl Into<String>) {
        let field = self.field_path(key);
        self.errors.push(FieldError { field, code, message: message.into() });
    }

    /// The raw value of `key`; `None` when absent or JSON `null`.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.and_then(|m| m.get(key)).filter(|v| !v.is_null())
    }

    fn required(&mut self, key: &str) -> Option<&'a Value> {
        let v = self.get(key);
        if v.is_none() && self.obj.is_some() {
            self.error(key, "required", format!("{key} is required"));
        }
        v
    }

    /// A string of `min..=max` characters without control characters or
    /// leading/trailing whitespace.
    pub(crate) fn string(&mut self, key: &str, required: bool, min: usize, max: usize) -> Option<String> {
        let v = if required { self.required(key)? } else { self.get(key)? };
        let Some(s) = v.as_str() else {
            self.error(key, "invalid_type", format!("{key} must be a string, found {}", type_name(v)));
            return None;
        };
        let len = s.chars().count();
        if len < min {
            self.error(key, "too_short", format!("{key} must not be empty"));
            return None;
        }
        if len > max {
            self.error(key, "too_long", format!("{key} must be at most {max} characters, found {len}"));
            return None;
        }
        if s.chars().any(char::is_control) {
            self.error(key, "invalid_format", format!("{key} must not contain control characters"));
            return None;
        }
        if s.trim() != s {
            self.error(key, "invalid_format", format!("{key} must not start or end with whitespace"));
            return None;
        }
        Some(s.to_owned())
    }

    /// An integer in `min..=max` (JSON number without fraction).
    pub(crate) fn integer(&mut self, key: &str, required: bool, min: i64, max: i64) -> Option<i64> {
        let v = if required { self.required(key)? } else { self.get(key)? };
        let Some(n) = v.as_i64() else {
            let msg = if v.is_number() {
                format!("{key} must be a whole number between {min} and {max}, found {v}")
            } else {
                format!("{key} must be a number, found {}", type_name(v))
            };
            let code = if v.is_number() { "out_of_range" } else { "invalid_type" };
            self.error(key, code, msg);
            return None;
        };
        if n < min || n > max {
            self.error(key, "out_of_range", format!("{key} must be between {min} and {max}, found {n}"));
            return None;
        }
        Some(n)
    }

    pub(crate) fn array(&mut self, key: &str, min: usize, max: usize) -> Option<&'a Vec<Value>> {
        let v = self.required(key)?;
        let Some(a) = v.as_array() else {
            self.error(key, "invalid_type", format!("{key} must be an array, found {}", type_name(v)));
            return None;
        };
        if a.len() < min {
            self.error(key, "too_short", format!("{key} must have at least {min} element(s)"));
            return None;
        }
        if a.len() > max {
            self.error(key, "too_long", format!("{key} must have at most {max} elements, found {}", a.len()));
            return None;
        }
        Some(a)
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn path_or_root(path: &str) -> String {
    if path.is_empty() { "/".to_owned() } else { path.to_owned() }
}

/// RFC 6901 escaping of one reference token.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}
