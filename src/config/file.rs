//! Merging a TOML file (`--config` / `ORDER_SAGA_CONFIG`) under flags and
//! environment: keys are the long option names; an unknown key is an error.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::FromArgMatches;
use clap::parser::ValueSource;

use super::ConfigError;

/// Parses `args` (including argv\[0\]) into the command line `C` (which
/// flattens [`Config`](super::Config)), merging the TOML file named by
/// `--config`/`ORDER_SAGA_CONFIG` under flags and environment.
pub fn parse_with_file<C, I, T>(args: I) -> Result<C, ConfigError>
where
    C: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    parse_with(C::command(), args)
}

/// [`parse_with_file`] with a prepared `cmd` (tests take the environment out).
pub fn parse_with<C, I, T>(cmd: clap::Command, args: I) -> Result<C, ConfigError>
where
    C: FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let matches = cmd.clone().try_get_matches_from(&args)?;
    let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
        return Ok(C::from_arg_matches(&matches)?);
    };
    let extra = file_args(&path, &cmd, &matches)?;
    // File values go right after argv[0]: they are only added for options
    // that flags and environment left at their defaults.
    let mut merged = Vec::with_capacity(args.len() + extra.len());
    merged.extend(args.first().cloned());
    merged.extend(extra);
    merged.extend(args.iter().skip(1).cloned());
    let matches = cmd.try_get_matches_from(merged)?;
    Ok(C::from_arg_matches(&matches)?)
}

fn file_args(path: &Path, cmd: &clap::Command, matches: &clap::ArgMatches) -> Result<Vec<OsString>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.into(), source })?;
    let table: BTreeMap<String, toml::Value> =
        toml::from_str(&text).map_err(|e| ConfigError::ParseFile { path: path.into(), message: e.to_string() })?;
    let mut out = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && a.get_id() != "config")
            .ok_or_else(|| ConfigError::UnknownKey { path: path.into(), key: key.clone() })?;
        let id = arg.get_id().as_str();
        if matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        for v in values {
            let s = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return Err(ConfigError::BadValue { path: path.into(), key: key.clone() });
                }
            };
            out.push(OsString::from(format!("--{long}={s}")));
        }
    }
    Ok(out)
}
