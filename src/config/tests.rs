//! Parsing, the TOML file, validation and topic names.

use clap::CommandFactory;

use super::*;

/// The daemon's options under two subcommands: what these tests need of
/// the command line (the real one is `crate::cli::Cli`).
#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: TestCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TestCommand {
    Serve,
    Migrate,
}

/// Parses without reading `ORDER_SAGA_*` from the environment, so the
/// tests do not depend on the shell they run in.
fn parse(args: &[&str]) -> Result<Cli, ConfigError> {
    let cmd = Cli::command().mut_args(|a| a.env(None::<&str>));
    parse_with(cmd, std::iter::once("order-saga").chain(args.iter().copied()))
}

#[test]
fn cli_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn file_values_apply_under_flags() {
    let dir = std::env::temp_dir().join(format!("os-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        "database_url = \"mysql://file/db\"\nhttp-addr = \"127.0.0.1:9999\"\nkafka_topic = [\"payment.failed.v1=pf\"]\noutbox_relay = false\n",
    )
    .unwrap();
    let cli = parse(&["--config", file.to_str().unwrap(), "--http-addr", "127.0.0.1:1234", "migrate"]).unwrap();
    assert_eq!(cli.config.database.database_url.as_ref().map(|u| u.expose()), Some("mysql://file/db"));
    assert_eq!(cli.config.http.http_addr.port(), 1234, "flag beats file");
    assert!(!cli.config.outbox.outbox_relay);
    assert_eq!(cli.config.topics().unwrap().of(MessageKind::PaymentFailed), "pf");

    std::fs::write(&file, "databse_url = \"x\"\n").unwrap();
    let err = parse(&["--config", file.to_str().unwrap(), "migrate"]).unwrap_err();
    assert!(err.to_string().contains("unknown key \"databse_url\""), "{err}");
}

#[test]
fn validation_messages_name_the_variable() {
    let cli = parse(&["migrate"]).unwrap();
    let err = cli.config.validate(false).unwrap_err().to_string();
    assert!(err.contains("ORDER_SAGA_DATABASE_URL"), "{err}");

    let cli = parse(&["--database-url", "postgres://x", "migrate"]).unwrap();
    assert!(cli.config.validate(false).unwrap_err().to_string().contains("mysql://"));

    let cli = parse(&["--database-url", "mysql://x/y", "serve"]).unwrap();
    assert!(cli.config.validate(true).unwrap_err().to_string().contains("ORDER_SAGA_KAFKA_BROKERS"));

    let cli = parse(&["--database-url", "mysql://x/y", "--sweep-schedule", "every second", "migrate"]).unwrap();
    assert!(cli.config.validate(false).unwrap_err().to_string().contains("cron"));

    let cli = parse(&["--database-url", "mysql://x/y", "--kafka-topic", "nope.v1=x", "migrate"]).unwrap();
    assert!(cli.config.validate(false).unwrap_err().to_string().contains("not a message name"));

    let cli = parse(&["--database-url", "mysql://x/y", "--ops-token", "short", "migrate"]).unwrap();
    assert!(cli.config.validate(false).unwrap_err().to_string().contains("ORDER_SAGA_OPS_TOKEN"));

    let linger = |v| parse(&["--database-url", "mysql://x/y", "--consumer-group-commit-linger", v, "migrate"]).unwrap();
    assert!(
        linger("5s")
            .config
            .validate(false)
            .unwrap_err()
            .to_string()
            .contains("ORDER_SAGA_CONSUMER_GROUP_COMMIT_LINGER")
    );
    linger("5ms").config.validate(false).unwrap();
}

#[test]
fn bad_durations_are_refused_by_the_parser() {
    let err = parse(&["--shutdown-grace", "soon", "migrate"]).unwrap_err().to_string();
    assert!(err.contains("15s"), "{err}");
}

#[test]
fn topics_apply_prefix_and_overrides() {
    let cli = parse(&["--kafka-topic-prefix", "prod.", "--kafka-topic", "order.created.v1=orders", "migrate"]).unwrap();
    let t = cli.config.topics().unwrap();
    assert_eq!(t.of(MessageKind::OrderCreated), "orders");
    assert_eq!(t.of(MessageKind::PaymentFailed), "prod.payment.failed.v1");
    assert_eq!(t.dlq, "prod.order-saga.dlq");
    assert_eq!(t.kind_of("prod.payment.failed.v1"), Some(MessageKind::PaymentFailed));
    assert_eq!(t.inbound().len(), 4);
}

#[test]
fn no_secret_is_printed_by_debug() {
    let cli = parse(&[
        "--database-url",
        "mysql://u:db-pass-1@db/o",
        "--kafka-sasl-password",
        "sasl-pass-2",
        "--ops-token",
        "ops-token-3-0123456789",
        "--schema-registry-username",
        "sr-user",
        "--schema-registry-password",
        "sr-pass-4",
        "--schema-registry-url",
        "https://u:sr-url-pass-6@registry:8081",
        "--ops-oidc-issuer",
        "https://idp.example.com",
        "--ops-oidc-client-id",
        "console",
        "--ops-oidc-client-secret",
        "oidc-secret-7",
        "migrate",
    ])
    .unwrap();
    let printed = format!("{:?} {:?}", cli.config, cli.config.oidc_settings());
    for secret in ["db-pass-1", "sasl-pass-2", "ops-token-3", "sr-pass-4", "sr-url-pass-6", "oidc-secret-7"] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
    let client = crate::kafka::ClientSettings::from_config(&cli.config, "b:9092");
    assert!(!format!("{client:?}").contains("sasl-pass-2"));
}

#[test]
fn kafka_client_certificates_reach_librdkafka_and_cleartext_passwords_are_warned_about() {
    let cli = parse(&[
        "--kafka-security-protocol",
        "ssl",
        "--kafka-ssl-cert-location",
        "/etc/kafka/client.pem",
        "--kafka-ssl-key-location",
        "/etc/kafka/client.key",
        "--kafka-ssl-key-password",
        "key-pass-5",
        "migrate",
    ])
    .unwrap();
    let client = crate::kafka::ClientSettings::from_config(&cli.config, "b:9093");
    let c = client.client_config();
    assert_eq!(c.get("ssl.certificate.location"), Some("/etc/kafka/client.pem"));
    assert_eq!(c.get("ssl.key.location"), Some("/etc/kafka/client.key"));
    assert_eq!(c.get("ssl.key.password"), Some("key-pass-5"));
    assert!(!format!("{client:?}").contains("key-pass-5"));
    assert_eq!(client.cleartext_password_warning(), None);
    let plain = parse(&[
        "--kafka-security-protocol",
        "sasl_plaintext",
        "--kafka-sasl-mechanism",
        "PLAIN",
        "--kafka-sasl-username",
        "u",
        "--kafka-sasl-password",
        "p",
        "migrate",
    ])
    .unwrap();
    assert!(crate::kafka::ClientSettings::from_config(&plain.config, "b:9092").cleartext_password_warning().is_some());
}

#[test]
fn the_console_identity_provider_needs_an_issuer_and_a_client_and_a_callback_url_of_the_console() {
    let settings = |args: &[&str]| {
        let mut all = args.to_vec();
        all.push("migrate");
        parse(&all).and_then(|cli| cli.config.oidc_settings())
    };
    assert!(settings(&[]).unwrap().is_none());
    let s = settings(&["--ops-oidc-issuer", "https://idp.example.com", "--ops-oidc-client-id", "c"]).unwrap().unwrap();
    assert_eq!((s.client_id.as_str(), s.role_claim.as_str(), s.client_secret), ("c", "roles", None));
    assert!(settings(&["--ops-oidc-issuer", "https://idp.example.com"]).is_err(), "no client id");
    assert!(settings(&["--ops-oidc-client-secret", "x"]).is_err(), "a secret alone");
    assert!(settings(&["--ops-oidc-issuer", "idp.example.com", "--ops-oidc-client-id", "c"]).is_err(), "not a URL");
    let redirect = |r: &str| {
        settings(&[
            "--ops-oidc-issuer",
            "https://idp.example.com",
            "--ops-oidc-client-id",
            "c",
            "--ops-oidc-redirect-url",
            r,
        ])
    };
    assert!(redirect("https://ops.example.com/ops/ui/callback").is_ok());
    assert!(redirect("https://ops.example.com/elsewhere").is_err(), "must be the console's callback");
}
