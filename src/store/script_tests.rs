use chrono::TimeZone;

use super::*;

fn lit(v: impl Literal) -> String {
    let mut s = String::new();
    v.write(&mut s);
    s
}

#[test]
fn a_string_is_hexadecimal_digits_with_its_character_set_whatever_it_holds() {
    assert_eq!(lit("ab"), "_utf8mb4 X'6162'");
    assert_eq!(lit(""), "_utf8mb4 X''");
    assert_eq!(lit("ü"), "_utf8mb4 X'C3BC'");
    let hostile = "x'); DROP TABLE orders; -- \\' \" \0 `";
    let out = lit(hostile);
    let hex = out.strip_prefix("_utf8mb4 X'").and_then(|s| s.strip_suffix('\'')).expect("a hex literal");
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{out}");
    assert_eq!(hex.len(), hostile.len() * 2);
}

#[test]
fn bytes_numbers_times_and_null_are_literals_of_their_kind() {
    assert_eq!(lit(&[0u8, 0xff][..]), "X'00FF'");
    assert_eq!(lit(42u64), "42");
    assert_eq!(lit(-7i64), "-7");
    assert_eq!(lit(true), "1");
    assert_eq!(lit(None::<&str>), "NULL");
    assert_eq!(lit(Some("a")), "_utf8mb4 X'61'");
    assert_eq!(lit(rust_decimal::Decimal::new(-2250, 2)), "-22.50");
    let t = Utc.with_ymd_and_hms(2026, 12, 6, 3, 40, 0).unwrap() + chrono::Duration::microseconds(123_456);
    assert_eq!(lit(t), "TIMESTAMP'2026-12-06 03:40:00.123456'");
    assert_eq!(lit(OrderId::new(9).unwrap()), "9");
    assert_eq!(lit(SagaVersion(3)), "3");
}

#[test]
fn statements_are_separated_and_rows_are_parenthesised() {
    let mut s = Script::new();
    assert_eq!(s.len(), 0);
    s.statement("a").sql("INSERT INTO t (a, b) ").values([(1u32, "x"), (2, "y")], |r, (a, b)| {
        r.lit(a).lit(b);
    });
    s.statement("b").sql("DELETE FROM t WHERE a = ").lit(1u32).expect_rows(1, "gone");
    assert_eq!(s.len(), 2);
    let debug = format!("{s:?}");
    assert!(debug.contains(r#"statements: ["a", "b"]"#) && !debug.contains("X'"), "{debug}");
    assert_eq!(
        s.text(),
        "INSERT INTO t (a, b) VALUES (1, _utf8mb4 X'78'), (2, _utf8mb4 X'79');\nDELETE FROM t WHERE a = 1"
    );
}

#[test]
fn a_long_script_is_cut_between_statements() {
    let mut s = Script::new();
    let big = "x".repeat(CHUNK_BYTES / 2 + 1);
    for _ in 0..3 {
        s.statement("big").sql("SELECT ").lit(big.as_str());
    }
    assert_eq!(s.len(), 3);
    // Each literal is twice the string: every statement starts a new query.
    assert_eq!(s.done.len(), 2);
    assert!(s.done.iter().all(|(sql, steps)| steps.len() == 1 && !sql.contains(';')));
}
