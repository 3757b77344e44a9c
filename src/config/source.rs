//! One file being loaded: its spanned TOML tree, the errors found so far,
//! and the helpers that turn spans into lines and key paths.
//!
//! Flow: [`parse`] builds the tree (a syntax error stops this file),
//! [`check_keys`] reports every unknown key against the schema and removes it,
//! [`Ctx::section`] deserializes one table into its `File*` struct, and the
//! value helpers (`duration`, `size`, `int`, ...) convert single values,
//! recording an error and falling back to the default so checking goes on.

use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::ConfigError;
use super::file::{RawSize, Shape};
use super::units;

/// The key of an error that is not inside any key or table.
pub(super) const TOP_LEVEL: &str = "(top level)";

/// Errors and line numbers for one file.
pub(super) struct Ctx {
    pub file: PathBuf,
    line_starts: Vec<usize>,
    pub errors: Vec<ConfigError>,
}

impl Ctx {
    pub fn new(file: &Path, text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Ctx {
            file: file.to_path_buf(),
            line_starts,
            errors: Vec::new(),
        }
    }

    /// 1-based line of a byte offset.
    pub fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    /// The errors found, in line order.
    pub fn into_errors(mut self) -> Vec<ConfigError> {
        self.errors.sort_by_key(|e| e.line);
        self.errors
    }

    /// Records an error at `span` (or without a line). An error outside any
    /// key (a syntax error before the first table, say) gets [`TOP_LEVEL`].
    pub fn error(&mut self, span: Option<Range<usize>>, key: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: span.map(|s| self.line(s.start)),
            key: if key.is_empty() { TOP_LEVEL } else { key }.to_string(),
            message: message.into(),
        });
    }

    /// Records an error at a spanned value.
    pub fn at<T>(&mut self, value: &Spanned<T>, key: &str, message: impl Into<String>) {
        self.error(Some(value.span()), key, message);
    }

    /// Deserializes one table of `tree`; a type error is recorded with its key path.
    pub fn section<T: DeserializeOwned>(
        &mut self,
        tree: &DeTable<'_>,
        value: &Spanned<DeValue<'_>>,
    ) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => Some(v),
            Err(e) => {
                let span = e.span().unwrap_or_else(|| value.span());
                let key = path_at(tree, span.start, "").unwrap_or_default();
                let message = e
                    .message()
                    .replace("expected i64", "expected an integer")
                    .replace("expected a sequence", "expected an array");
                self.error(Some(span), &key, message);
                None
            }
        }
    }

    /// Converts a string value with `parse`, recording a failure.
    pub fn parse<T>(
        &mut self,
        value: &Spanned<String>,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        parse(value.get_ref())
            .map_err(|m| self.at(value, key, m))
            .ok()
    }

    pub fn duration(
        &mut self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        v.as_ref()
            .and_then(|v| self.parse(v, key, units::parse_duration))
            .unwrap_or(default)
    }

    /// A duration that must not be zero (intervals, timeouts).
    pub fn positive_duration(
        &mut self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let d = self.duration(v, key, default);
        match v {
            Some(v) if d.is_zero() => {
                self.at(v, key, "must be greater than 0");
                default
            }
            _ => d,
        }
    }

    pub fn size(&mut self, v: &Option<Spanned<RawSize>>, key: &str, default: u64) -> u64 {
        match v {
            None => default,
            Some(v) => v.get_ref().bytes().unwrap_or_else(|m| {
                self.at(v, key, m);
                default
            }),
        }
    }

    pub fn int(
        &mut self,
        v: &Option<Spanned<i64>>,
        key: &str,
        range: RangeInclusive<i64>,
        default: i64,
    ) -> i64 {
        match v {
            Some(v) if !range.contains(v.get_ref()) => {
                let message = if *range.end() == i64::MAX {
                    format!(
                        "{} is too small; must be at least {}",
                        v.get_ref(),
                        range.start()
                    )
                } else {
                    format!(
                        "{} is out of range; must be between {} and {}",
                        v.get_ref(),
                        range.start(),
                        range.end()
                    )
                };
                self.at(v, key, message);
                default
            }
            Some(v) => *v.get_ref(),
            None => default,
        }
    }

    pub fn choice<T: Copy>(
        &mut self,
        v: &Option<Spanned<String>>,
        key: &str,
        valid: &[(&str, T)],
        default: T,
    ) -> T {
        v.as_ref()
            .and_then(|v| self.parse(v, key, |t| units::parse_enum(t, valid)))
            .unwrap_or(default)
    }

    /// A path, relative ones resolved against `dir` (the file's directory).
    pub fn path(v: &Option<Spanned<String>>, dir: &Path, default: &str) -> PathBuf {
        let p = v.as_ref().map_or(default, |v| v.get_ref().as_str());
        dir.join(p)
    }
}

/// Parses a whole file; a syntax error is recorded and stops this file.
pub(super) fn parse<'i>(ctx: &mut Ctx, text: &'i str) -> Option<DeTable<'i>> {
    match DeTable::parse(text) {
        Ok(tree) => Some(tree.into_inner()),
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            let key = syntax_key(text, offset);
            ctx.error(
                Some(offset..offset),
                &key,
                format!("TOML syntax error: {}", e.message().trim()),
            );
            None
        }
    }
}

/// Best guess of the key a syntax error is in: the last table header before
/// it and the key on its line.
fn syntax_key(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let header = text[..line_start]
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with('['))
        .map(|l| {
            let inner = l.split(']').next().unwrap_or_default();
            inner.trim_start_matches('[').trim().to_string()
        })
        .unwrap_or_default();
    let line = text[line_start..].lines().next().unwrap_or_default().trim();
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['))
        .unwrap_or_default();
    match (header.is_empty(), key.is_empty()) {
        (_, true) if line.starts_with('[') => {
            line.trim_matches(|c| c == '[' || c == ']').to_string()
        }
        (true, _) => key.to_string(),
        (false, true) => header,
        (false, false) => format!("{header}.{key}"),
    }
}

/// Reports every key not in `schema` (all levels) and removes it from the tree.
/// `elsewhere` names the keys of the other file, for a better hint.
pub(super) fn check_keys(
    ctx: &mut Ctx,
    root: &mut DeTable<'_>,
    schema: &[(&'static str, Shape)],
    elsewhere: (&str, &[(&'static str, Shape)]),
) {
    let names: Vec<&str> = schema.iter().map(|(n, _)| *n).collect();
    let mut unknown = Vec::new();
    for (key, value) in root.iter_mut() {
        let Some((_, shape)) = schema.iter().find(|(n, _)| *n == key.get_ref().as_ref()) else {
            let mut message = unknown_message(key.get_ref(), &names);
            if elsewhere
                .1
                .iter()
                .any(|(n, _)| *n == key.get_ref().as_ref())
            {
                message = format!(
                    "unknown key; [{key}] belongs in {}",
                    elsewhere.0,
                    key = key.get_ref()
                );
            }
            ctx.at(key, &shown(key.get_ref()), message);
            unknown.push(key.get_ref().to_string());
            continue;
        };
        let path = key.get_ref().to_string();
        match (shape, value.get_mut()) {
            (Shape::Table(fields), DeValue::Table(t)) => check_table(ctx, t, &path, fields),
            (Shape::Tables(fields), DeValue::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let DeValue::Table(t) = item.get_mut() {
                        check_table(ctx, t, &format!("{path}[{i}]"), fields);
                    }
                }
            }
            (Shape::Map(fields), DeValue::Table(entries)) => {
                for (name, entry) in entries.iter_mut() {
                    if let DeValue::Table(t) = entry.get_mut() {
                        check_table(ctx, t, &format!("{path}.{}", name.get_ref()), fields);
                    }
                }
            }
            // Wrong shape: left to the section's deserializer to report.
            _ => {}
        }
    }
    for u in &unknown {
        root.remove(u.as_str());
    }
}

fn check_table(ctx: &mut Ctx, table: &mut DeTable<'_>, path: &str, fields: &[&str]) {
    let mut unknown = Vec::new();
    for (key, _) in table.iter() {
        if !fields.contains(&key.get_ref().as_ref()) {
            let message = unknown_message(key.get_ref(), fields);
            ctx.at(key, &format!("{path}.{}", shown(key.get_ref())), message);
            unknown.push(key.get_ref().to_string());
        }
    }
    for u in &unknown {
        table.remove(u.as_str());
    }
}

/// A key as written in a key path: the empty key quoted, as in TOML.
fn shown(key: &str) -> String {
    if key.is_empty() {
        "\"\"".to_string()
    } else {
        key.to_string()
    }
}

fn unknown_message(key: &str, valid: &[&str]) -> String {
    let best = valid
        .iter()
        .map(|v| (units::edit_distance(key, v), *v))
        .min()
        .filter(|(d, _)| *d <= 2 && *d < key.len());
    let list = valid.join(", ");
    match best {
        Some((_, v)) => format!("unknown key; did you mean `{v}`? (valid keys: {list})"),
        None => format!("unknown key (valid keys: {list})"),
    }
}

/// Dotted key path of the deepest key or value at `offset`.
pub(super) fn path_at(table: &DeTable<'_>, offset: usize, prefix: &str) -> Option<String> {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if let Some(deeper) = path_in(value, offset, &path) {
            return Some(deeper);
        }
        if key.span().contains(&offset) || value.span().contains(&offset) {
            return Some(path);
        }
    }
    None
}

fn path_in(value: &Spanned<DeValue<'_>>, offset: usize, path: &str) -> Option<String> {
    match value.get_ref() {
        DeValue::Table(t) => path_at(t, offset, path),
        DeValue::Array(items) => {
            items
                .iter()
                .enumerate()
                .find_map(|(i, item)| match item.get_ref() {
                    DeValue::Table(t) => {
                        let path = format!("{path}[{i}]");
                        path_at(t, offset, &path)
                            .or_else(|| item.span().contains(&offset).then_some(path))
                    }
                    _ => item.span().contains(&offset).then(|| path.to_string()),
                })
        }
        _ => None,
    }
}
