//! Order creation and status-change requests: parsing and validation.
//!
//! Everything here is pure: a JSON value goes in, a validated value (or the
//! complete list of problems) comes out. Money is `rust_decimal::Decimal`
//! end to end — JSON carries it as a decimal string, MySQL as `DECIMAL(19,4)`.

use std::collections::HashSet;

use rust_decimal::Decimal;
use serde_json::Value;

use super::currency::Currency;
use super::status::OrderStatus;
use super::validate::{FieldError, ObjectReader, type_name};

/// Bounds for a sane e-commerce order. They protect the database and the
/// downstream participants (inventory, payment) from absurd requests.
pub mod limits {
    pub const MAX_ITEMS: usize = 100;
    pub const MAX_QTY: i64 = 10_000;
    /// Largest unit price, in currency units.
    pub const MAX_UNIT_PRICE: i64 = 1_000_000;
    /// Largest order total, in currency units. Fits `DECIMAL(19,4)` with room to spare.
    pub const MAX_TOTAL: i64 = 100_000_000;
    pub const MAX_ID_LEN: usize = 64;
    pub const MAX_REGION_LEN: usize = 32;
    pub const MAX_REASON_LEN: usize = 64;
    pub const MAX_COMMENT_LEN: usize = 1_000;
    pub const MAX_ACTOR_LEN: usize = 128;
}

/// A validated order creation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub customer_id: String,
    pub tenant_region: String,
    pub currency: Currency,
    pub items: Vec<NewOrderItem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrderItem {
    pub sku: String,
    pub qty: u32,
    pub unit_price: Decimal,
}

impl NewOrderItem {
    pub fn line_total(&self) -> Decimal {
        self.unit_price * Decimal::from(self.qty)
    }
}

impl NewOrder {
    /// Sum of the line totals. Exact: decimals never round here.
    pub fn total(&self) -> Decimal {
        self.items.iter().map(NewOrderItem::line_total).sum()
    }

    /// Validates a `POST /orders` body (`OrderCreate` in the OpenAPI document).
    pub fn from_json(body: &Value) -> Result<NewOrder, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut r = ObjectReader::new("", body, &["customer_id", "tenant_region", "currency", "items"], &mut errors);
        if !r.is_object() {
            return Err(errors);
        }
        let customer_id = r.string("customer_id", true, 1, limits::MAX_ID_LEN);
        let tenant_region = r.string("tenant_region", true, 1, limits::MAX_REGION_LEN);
        if let Some(region) = &tenant_region
            && !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            r.error("tenant_region", "invalid_format", "tenant_region may contain only letters, digits, '-' and '_'");
        }
        let currency = match r.string("currency", true, 1, 3) {
            Some(code) => match Currency::parse(&code) {
                Some(c) => Some(c),
                None => {
                    r.error(
                        "currency",
                        "invalid_value",
                        format!("{code:?} is not an ISO 4217 currency code (use upper case, e.g. \"EUR\")"),
                    );
                    None
                }
            },
            None => None,
        };
        let items_json = r.array("items", 1, limits::MAX_ITEMS);
        let mut items = Vec::new();
        let mut seen_skus = HashSet::new();
        if let Some(items_json) = items_json {
            for (i, item) in items_json.iter().enumerate() {
                let path = format!("/items/{i}");
                if let Some(parsed) = parse_item(&path, item, currency, r.errors) {
                    if !seen_skus.insert(parsed.sku.clone()) {
                        r.errors.push(FieldError {
                            field: format!("{path}/sku"),
                            code: "duplicate",
                            message: format!(
                                "sku {:?} appears more than once; combine the quantities into one item",
                                parsed.sku
                            ),
                        });
                    }
                    items.push(parsed);
                }
            }
        }
        if let (Some(customer_id), Some(tenant_region), Some(currency), true) =
            (customer_id, tenant_region, currency, errors.is_empty())
        {
            let order = NewOrder { customer_id, tenant_region, currency, items };
            if order.total() > Decimal::from(limits::MAX_TOTAL) {
                return Err(vec![FieldError {
                    field: "/items".into(),
                    code: "out_of_range",
                    message: format!(
                        "order total {} {} exceeds the maximum of {} {}",
                        order.total(),
                        order.currency,
                        limits::MAX_TOTAL,
                        order.currency
                    ),
                }]);
            }
            Ok(order)
        } else {
            Err(errors)
        }
    }
}

fn parse_item(
    path: &str,
    item: &Value,
    currency: Option<Currency>,
    errors: &mut Vec<FieldError>,
) -> Option<NewOrderItem> {
    let mut r = ObjectReader::new(path, item, &["sku", "qty", "unit_price"], errors);
    if !r.is_object() {
        return None;
    }
    let sku = r.string("sku", true, 1, limits::MAX_ID_LEN);
    if let Some(s) = &sku
        && !s.bytes().all(|b| b.is_ascii_graphic())
    {
        r.error("sku", "invalid_format", "sku may contain only visible ASCII characters (no spaces)");
    }
    let qty = r.integer("qty", true, 1, limits::MAX_QTY);
    let unit_price = match r.get("unit_price") {
        None => {
            r.error("unit_price", "required", "unit_price is required");
            None
        }
        Some(Value::String(s)) => match parse_money(s, currency) {
            Ok(d) => Some(d),
            Err(e) => {
                r.error("unit_price", e.code(), e.message());
                None
            }
        },
        Some(v) => {
            r.error(
                "unit_price",
                "invalid_type",
                format!(
                    "unit_price must be a decimal string such as \"19.99\" (never a JSON number, which would be read as a float), found {}",
                    type_name(v)
                ),
            );
            None
        }
    };
    match (sku, qty, unit_price) {
        (Some(sku), Some(qty), Some(unit_price)) => {
            let qty = u32::try_from(qty).ok()?;
            Some(NewOrderItem { sku, qty, unit_price })
        }
        _ => None,
    }
}

/// Parses a non-negative decimal amount written as `digits[.digits]`.
/// The number of decimals must not exceed the currency's minor units.
/// Why a price string is not a price: its field error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MoneyError {
    /// Not a non-negative decimal string with the currency's digits.
    Format(String),
    /// Well formed, but above the largest price accepted.
    OutOfRange(String),
}

impl MoneyError {
    fn code(&self) -> &'static str {
        match self {
            MoneyError::Format(_) => "invalid_format",
            MoneyError::OutOfRange(_) => "out_of_range",
        }
    }

    fn message(self) -> String {
        match self {
            MoneyError::Format(m) | MoneyError::OutOfRange(m) => m,
        }
    }
}

fn parse_money(s: &str, currency: Option<Currency>) -> Result<Decimal, MoneyError> {
    if s.starts_with('-') {
        return Err(MoneyError::Format(format!("unit_price must not be negative, found {s:?}")));
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let well_formed = !int.is_empty()
        && int.len() <= 12
        && int.bytes().all(|b| b.is_ascii_digit())
        && (!s.contains('.') || !frac.is_empty())
        && frac.len() <= 4
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !well_formed {
        return Err(MoneyError::Format(format!("unit_price must be a decimal string such as \"19.99\", found {s:?}")));
    }
    let d: Decimal = s.parse().map_err(|_| MoneyError::Format(format!("unit_price {s:?} is not a decimal number")))?;
    if let Some(c) = currency
        && frac.len() as u32 > c.minor_units()
    {
        return Err(MoneyError::Format(format!(
            "unit_price {s:?} has {} decimal places but {} has {} minor unit digit(s)",
            frac.len(),
            c,
            c.minor_units()
        )));
    }
    if d > Decimal::from(limits::MAX_UNIT_PRICE) {
        return Err(MoneyError::OutOfRange(format!(
            "unit_price must be between 0 and {}, found {s}",
            limits::MAX_UNIT_PRICE
        )));
    }
    Ok(d.normalize().max(Decimal::ZERO))
}

/// A status change to apply, by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub to_status: OrderStatus,
    pub reason_code: Option<String>,
    pub comment: Option<String>,
    /// Who made it: the verified principal, or (an open API) the body's `actor`.
    pub actor: String,
    /// Optimistic concurrency: when given, the change applies only if the
    /// order is still at this version.
    pub expected_version: Option<u64>,
}

/// A validated `POST /orders/{id}/status` body: a [`StatusChange`] whose
/// actor the handler decides ([`StatusChangeRequest::by`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChangeRequest {
    pub to_status: OrderStatus,
    pub reason_code: Option<String>,
    pub comment: Option<String>,
    /// The actor the body names, if any.
    pub actor: Option<String>,
    pub expected_version: Option<u64>,
}

impl StatusChangeRequest {
    /// The change, made by `actor`.
    pub fn by(self, actor: String) -> StatusChange {
        let StatusChangeRequest { to_status, reason_code, comment, expected_version, .. } = self;
        StatusChange { to_status, reason_code, comment, actor, expected_version }
    }
}

impl StatusChangeRequest {
    pub fn from_json(body: &Value) -> Result<StatusChangeRequest, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut r = ObjectReader::new(
            "",
            body,
            &["to_status", "reason_code", "comment", "actor", "expected_version"],
            &mut errors,
        );
        if !r.is_object() {
            return Err(errors);
        }
        let to_status = match r.string("to_status", true, 1, 32) {
            Some(s) => match s.parse::<OrderStatus>() {
                Ok(st) => Some(st),
                Err(e) => {
                    r.error("to_status", "invalid_value", e.to_string());
                    None
                }
            },
            None => None,
        };
        let reason_code = r.string("reason_code", false, 1, limits::MAX_REASON_LEN);
        if let Some(code) = &reason_code
            && !code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            r.error("reason_code", "invalid_format", "reason_code must be UPPER_SNAKE_CASE, e.g. CUSTOMER_REQUEST");
        }
        let comment = r.string("comment", false, 0, limits::MAX_COMMENT_LEN);
        let actor = r.string("actor", false, 1, limits::MAX_ACTOR_LEN);
        let expected_version = r.integer("expected_version", false, 1, i64::MAX).map(|v| v as u64);
        match to_status {
            Some(to_status) if errors.is_empty() => {
                Ok(StatusChangeRequest { to_status, reason_code, comment, actor, expected_version })
            }
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn valid() -> Value {
        json!({
            "customer_id": "cust-1",
            "tenant_region": "eu-west",
            "currency": "EUR",
            "items": [
                {"sku": "SKU-1", "qty": 2, "unit_price": "19.99"},
                {"sku": "SKU-2", "qty": 1, "unit_price": "0"}
            ]
        })
    }

    fn errors_of(body: Value) -> Vec<(String, &'static str)> {
        match NewOrder::from_json(&body) {
            Ok(o) => panic!("expected errors, got {o:?}"),
            Err(e) => e.into_iter().map(|e| (e.field, e.code)).collect(),
        }
    }

    fn with(path: &[&str], value: Value) -> Value {
        let mut body = valid();
        let mut cur = &mut body;
        for (i, seg) in path.iter().enumerate() {
            if i + 1 == path.len() {
                if let Ok(idx) = seg.parse::<usize>() {
                    cur[idx] = value.clone();
                } else if value.is_null() {
                    cur.as_object_mut().unwrap().remove(*seg);
                } else {
                    cur[*seg] = value.clone();
                }
            } else if let Ok(idx) = seg.parse::<usize>() {
                cur = &mut cur[idx];
            } else {
                cur = &mut cur[*seg];
            }
        }
        body
    }

    #[test]
    fn valid_order_parses_with_exact_total() {
        let o = NewOrder::from_json(&valid()).unwrap();
        assert_eq!(o.items.len(), 2);
        assert_eq!(o.total().to_string(), "39.98");
        assert_eq!(o.currency.code(), "EUR");
    }

    #[test]
    fn money_is_exact_where_floats_are_not() {
        let body = json!({"customer_id":"c","tenant_region":"r","currency":"USD",
            "items":[{"sku":"a","qty":3,"unit_price":"0.10"},{"sku":"b","qty":1,"unit_price":"0.20"}]});
        assert_eq!(NewOrder::from_json(&body).unwrap().total(), "0.5".parse::<Decimal>().unwrap());
    }

    #[test]
    fn body_must_be_an_object() {
        assert_eq!(errors_of(json!([1])), vec![("/".into(), "invalid_type")]);
        assert_eq!(errors_of(json!("x")), vec![("/".into(), "invalid_type")]);
    }

    #[test]
    fn every_required_field_is_reported_at_once() {
        let errs = errors_of(json!({}));
        let fields: Vec<_> = errs.iter().map(|(f, c)| (f.as_str(), *c)).collect();
        assert_eq!(
            fields,
            vec![
                ("/customer_id", "required"),
                ("/tenant_region", "required"),
                ("/currency", "required"),
                ("/items", "required")
            ]
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert_eq!(errors_of(with(&["coupon"], json!("X"))), vec![("/coupon".into(), "unknown_field")]);
        assert_eq!(
            errors_of(with(&["items", "0", "quantity"], json!(1))),
            vec![("/items/0/quantity".into(), "unknown_field")]
        );
    }

    #[test]
    fn customer_id_rules() {
        assert_eq!(errors_of(with(&["customer_id"], json!(""))), vec![("/customer_id".into(), "too_short")]);
        assert_eq!(errors_of(with(&["customer_id"], json!("x".repeat(65)))), vec![("/customer_id".into(), "too_long")]);
        assert_eq!(errors_of(with(&["customer_id"], json!(12))), vec![("/customer_id".into(), "invalid_type")]);
        assert_eq!(errors_of(with(&["customer_id"], json!(" c"))), vec![("/customer_id".into(), "invalid_format")]);
        assert_eq!(errors_of(with(&["customer_id"], json!("a\u{7}"))), vec![("/customer_id".into(), "invalid_format")]);
        assert!(NewOrder::from_json(&with(&["customer_id"], json!("x".repeat(64)))).is_ok());
    }

    #[test]
    fn tenant_region_rules() {
        assert_eq!(
            errors_of(with(&["tenant_region"], json!("eu west"))),
            vec![("/tenant_region".into(), "invalid_format")]
        );
        assert_eq!(
            errors_of(with(&["tenant_region"], json!("r".repeat(33)))),
            vec![("/tenant_region".into(), "too_long")]
        );
    }

    #[test]
    fn currency_rules() {
        assert_eq!(errors_of(with(&["currency"], json!("eur"))), vec![("/currency".into(), "invalid_value")]);
        assert_eq!(errors_of(with(&["currency"], json!("ABC"))), vec![("/currency".into(), "invalid_value")]);
        assert_eq!(errors_of(with(&["currency"], json!("EURO"))), vec![("/currency".into(), "too_long")]);
    }

    #[test]
    fn items_rules() {
        assert_eq!(errors_of(with(&["items"], json!([]))), vec![("/items".into(), "too_short")]);
        assert_eq!(errors_of(with(&["items"], json!({}))), vec![("/items".into(), "invalid_type")]);
        let many: Vec<_> = (0..101).map(|i| json!({"sku": format!("s{i}"), "qty": 1, "unit_price": "1"})).collect();
        assert_eq!(errors_of(with(&["items"], json!(many))), vec![("/items".into(), "too_long")]);
        assert_eq!(errors_of(with(&["items", "0"], json!(5))), vec![("/items/0".into(), "invalid_type")]);
    }

    #[test]
    fn qty_rules() {
        for (v, code) in [
            (json!(0), "out_of_range"),
            (json!(-1), "out_of_range"),
            (json!(10_001), "out_of_range"),
            (json!(1.5), "out_of_range"),
            (json!("2"), "invalid_type"),
        ] {
            assert_eq!(errors_of(with(&["items", "0", "qty"], v.clone())), vec![("/items/0/qty".into(), code)], "{v}");
        }
        assert_eq!(errors_of(with(&["items", "0", "qty"], json!(null))), vec![("/items/0/qty".into(), "required")]);
    }

    #[test]
    fn unit_price_rules() {
        for (v, code) in [
            (json!("-1.00"), "invalid_format"),
            (json!(19.99), "invalid_type"),
            (json!("1e3"), "invalid_format"),
            (json!("1."), "invalid_format"),
            (json!(".5"), "invalid_format"),
            (json!("abc"), "invalid_format"),
            (json!("1.999"), "invalid_format"),
            (json!("1000000.01"), "out_of_range"),
        ] {
            assert_eq!(
                errors_of(with(&["items", "0", "unit_price"], v.clone())),
                vec![("/items/0/unit_price".into(), code)],
                "{v}"
            );
        }
        assert!(NewOrder::from_json(&with(&["items", "0", "unit_price"], json!("1000000"))).is_ok());
        assert!(NewOrder::from_json(&with(&["items", "0", "unit_price"], json!("0.00"))).is_ok());
    }

    #[test]
    fn unit_price_scale_follows_the_currency() {
        let mut body = with(&["currency"], json!("JPY"));
        body["items"] = json!([{"sku":"a","qty":1,"unit_price":"100"}]);
        assert!(NewOrder::from_json(&body).is_ok());
        body["items"] = json!([{"sku":"a","qty":1,"unit_price":"100.5"}]);
        assert_eq!(errors_of(body), vec![("/items/0/unit_price".into(), "invalid_format")]);
    }

    #[test]
    fn sku_rules() {
        assert_eq!(
            errors_of(with(&["items", "0", "sku"], json!("a b"))),
            vec![("/items/0/sku".into(), "invalid_format")]
        );
        assert_eq!(errors_of(with(&["items", "0", "sku"], json!(""))), vec![("/items/0/sku".into(), "too_short")]);
        assert_eq!(errors_of(with(&["items", "1", "sku"], json!("SKU-1"))), vec![("/items/1/sku".into(), "duplicate")]);
    }

    #[test]
    fn total_is_bounded() {
        let items: Vec<_> =
            (0..20).map(|i| json!({"sku": format!("s{i}"), "qty": 10_000, "unit_price": "1000000"})).collect();
        assert_eq!(errors_of(with(&["items"], json!(items))), vec![("/items".into(), "out_of_range")]);
    }

    #[test]
    fn status_change_parses_and_validates() {
        let ok = StatusChangeRequest::from_json(&json!({"to_status":"CONFIRMED","actor":"support:alice","reason_code":"MANUAL_CHECK","comment":"ok","expected_version":3})).unwrap();
        assert_eq!(ok.to_status, OrderStatus::Confirmed);
        assert_eq!(ok.expected_version, Some(3));

        let errs = |v: Value| {
            StatusChangeRequest::from_json(&v).unwrap_err().into_iter().map(|e| (e.field, e.code)).collect::<Vec<_>>()
        };
        assert_eq!(errs(json!({"to_status":"DONE","actor":"a"})), vec![("/to_status".into(), "invalid_value")]);
        // The actor is the caller's principal; an open API requires it (the handler).
        assert_eq!(StatusChangeRequest::from_json(&json!({"to_status":"CANCELLED"})).map(|r| r.actor), Ok(None));
        assert_eq!(errs(json!({"to_status":"CANCELLED","actor":""})), vec![("/actor".into(), "too_short")]);
        assert_eq!(
            errs(json!({"to_status":"CANCELLED","actor":"a","reason_code":"bad code"})),
            vec![("/reason_code".into(), "invalid_format")]
        );
        assert_eq!(
            errs(json!({"to_status":"CANCELLED","actor":"a","comment":"x".repeat(1001)})),
            vec![("/comment".into(), "too_long")]
        );
        assert_eq!(
            errs(json!({"to_status":"CANCELLED","actor":"a","expected_version":0})),
            vec![("/expected_version".into(), "out_of_range")]
        );
        assert_eq!(
            errs(json!({"to_status":"CANCELLED","actor":"a","extra":1})),
            vec![("/extra".into(), "unknown_field")]
        );
    }
}
