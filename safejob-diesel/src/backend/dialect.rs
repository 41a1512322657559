//! How each backend spells what differs between them, and the one renderer of the crate's SQL
//! templates.
//!
//! Every statement of the guard, the queue and the outbox is written once, as a template, and
//! rendered per backend with one vocabulary of placeholders:
//!
//! | placeholder | renders as | binds |
//! |---|---|---|
//! | `{now}` | the database clock (plus the test offset) | 0 |
//! | `{plus}` | the database clock plus `?` microseconds | 1 |
//! | `{plus_or_null}` | `{plus}`, or NULL when the bind is NULL (a guard row kept forever) | 1 |
//! | `{us:EXPR}` | the timestamp expression `EXPR` as integer µs since the Unix epoch | 0 |
//! | `{now_us}` | `{us:{now}}` | 0 |
//! | `{at}` | a bound UTC text instant as a timestamp (NULL stays NULL) | 1 |
//! | `{bigint}` | the cast target of an integer | 0 |
//! | `{append}` | a job's JSON error history with one error appended, the oldest dropped beyond [`MAX_ERROR_HISTORY`] | 3: attempt, kind, message |
//!
//! Lease expiry and every other instant are computed by the database clock inside the statement,
//! never from the worker's; every timestamp is read back as integer microseconds so that the
//! three backends read rows alike. A module's own placeholders (`{cols}`, `{t}`, `{q}`, `{done}`
//! …) are substituted by that module before [`render`].
//!
//! Tests cannot move a database's clock, so a store or queue can be given a clock offset
//! (`advance_clock_for_tests`); its statements are then rendered again with the offset written
//! into every `{now}`. In production the offset is 0 and `{now}` is the bare database clock.

use chrono::{DateTime, Utc};
use safejob_core::queue::MAX_ERROR_HISTORY;

use super::BackendKind;

/// Everything one backend spells differently. Plain text, so it exists whether or not the
/// backend's feature is compiled in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    /// `{now}`: the database's current time, plus a test offset in microseconds (0 in
    /// production).
    now: fn(i64) -> String,
    /// `{plus}`: the database's current time (plus the offset) plus `?` microseconds.
    plus: fn(i64) -> String,
    /// `{plus_or_null}`: `{plus}`, NULL for a NULL bind.
    plus_or_null: fn(i64) -> String,
    /// `{us:EXPR}`: a timestamp expression as integer microseconds since the Unix epoch (`{}` is
    /// the expression).
    to_us: &'static str,
    /// Whether the backend has `UPDATE … RETURNING` and `INSERT … ON CONFLICT DO NOTHING
    /// RETURNING` (PostgreSQL, SQLite); without, a grant is read back by a second statement.
    pub(crate) returning: bool,
    /// `{at}`: a bound UTC text instant as a timestamp (NULL stays NULL).
    at: &'static str,
    /// What the bound text of `{at}` ends with ([`Dialect::at_text`]).
    at_zone: &'static str,
    /// `{bigint}`: the cast target of an integer.
    bigint: &'static str,
    /// `{append}`: the error history `errors` with one error appended (`{obj}` is
    /// `error_object`, `{max}` the history's bound).
    append: &'static str,
    /// The JSON object of the new error: attempt, at_us ({now_us}), kind, message.
    error_object: &'static str,
    /// One bound JSON text as the backend's JSON value (a typed bind of
    /// [`EffectsTx`](crate::EffectsTx)).
    json: &'static str,
}

fn sqlite_modifier(offset_us: i64) -> String {
    if offset_us == 0 {
        String::new()
    } else {
        format!(", '{:+.6} seconds'", offset_us as f64 / 1e6)
    }
}

/// SQLite: timestamps are fixed-width UTC text (text order is time order), JSON through the
/// `json_*` functions.
const SQLITE: Dialect = Dialect {
    // SQLite's 'now' is fixed for the duration of one sqlite3_step, so every use in a statement
    // agrees.
    now: |off| {
        format!(
            "strftime('%Y-%m-%d %H:%M:%f', 'now'{})",
            sqlite_modifier(off)
        )
    },
    plus: |off| {
        format!(
            "strftime('%Y-%m-%d %H:%M:%f', 'now'{}, printf('%+.3f seconds', ? / 1000000.0))",
            sqlite_modifier(off)
        )
    },
    // SQLite's printf formats NULL as 0 (the plus would be now), so the NULL is kept apart; the
    // bind is read once, in a one-row subquery.
    plus_or_null: |off| {
        format!(
            "(SELECT CASE WHEN v IS NULL THEN NULL ELSE {} END FROM (SELECT ? AS v))",
            (SQLITE.plus)(off).replace('?', "v")
        )
    },
    to_us: "(CAST(ROUND((julianday({}) - 2440587.5) * 86400000.0) AS INTEGER) * 1000)",
    returning: true,
    at: "strftime('%Y-%m-%d %H:%M:%f', ?)",
    at_zone: "",
    bigint: "BIGINT",
    append: "json_insert(CASE WHEN json_array_length(errors) >= {max} \
        THEN json_remove(errors, '$[0]') ELSE errors END, '$[#]', {obj})",
    error_object: "json_object('attempt', ?, 'at_us', {now_us}, 'kind', ?, 'message', ?)",
    json: "?",
};

/// PostgreSQL: `timestamptz`; the history is text holding JSON, worked on as `jsonb`; binds
/// inside JSON builders are cast (PostgreSQL cannot infer their types).
const POSTGRES: Dialect = Dialect {
    // now() is the transaction's start: one value per statement in autocommit, and one value for
    // the whole transactional finalize.
    now: |off| match off {
        0 => "now()".to_owned(),
        off => format!("(now() + interval '{off} microseconds')"),
    },
    plus: |off| {
        format!(
            "({} + CAST(? AS float8) * interval '1 microsecond')",
            (POSTGRES.now)(off)
        )
    },
    // NULL times an interval is NULL.
    plus_or_null: |off| (POSTGRES.plus)(off),
    to_us: "CAST(extract(epoch FROM {}) * 1000000 AS int8)",
    returning: true,
    at: "CAST(CAST(? AS text) AS timestamptz)",
    // Without a zone the text would be read in the session's time zone.
    at_zone: "+00",
    bigint: "BIGINT",
    append: "CAST((CASE WHEN jsonb_array_length(CAST(errors AS jsonb)) >= {max} \
        THEN CAST(errors AS jsonb) - 0 ELSE CAST(errors AS jsonb) END) \
        || jsonb_build_array({obj}) AS text)",
    error_object: "jsonb_build_object('attempt', CAST(? AS int8), 'at_us', {now_us}, \
        'kind', CAST(? AS text), 'message', CAST(? AS text))",
    // A text bind does not convert to a `json` / `jsonb` column by itself; `jsonb` converts to
    // `json` and to text columns on assignment.
    json: "CAST(? AS jsonb)",
};

/// MySQL and MariaDB: `DATETIME(6)` written from `UTC_TIMESTAMP(6)` so that the session time zone
/// never matters. MySQL has no `RETURNING`; MariaDB ≥ 10.5 has `INSERT … RETURNING`, but not for
/// server-prepared statements (libmariadb reports no result metadata for it: diesel fails with
/// "No metadata exists"), so both read a new grant back with a second statement. An integer is
/// cast to `SIGNED`.
const MYSQL: Dialect = Dialect {
    now: |off| match off {
        0 => "UTC_TIMESTAMP(6)".to_owned(),
        off => format!("(UTC_TIMESTAMP(6) + INTERVAL {off} MICROSECOND)"),
    },
    plus: |off| format!("({} + INTERVAL ? MICROSECOND)", (MYSQL.now)(off)),
    // `INTERVAL NULL MICROSECOND` makes the sum NULL.
    plus_or_null: |off| (MYSQL.plus)(off),
    to_us: "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {})",
    returning: false,
    at: "CAST(? AS DATETIME(6))",
    at_zone: "",
    bigint: "SIGNED",
    append: "JSON_ARRAY_APPEND(CASE WHEN JSON_LENGTH(errors) >= {max} \
        THEN JSON_REMOVE(errors, '$[0]') ELSE errors END, '$', {obj})",
    error_object: "JSON_OBJECT('attempt', ?, 'at_us', {now_us}, 'kind', ?, 'message', ?)",
    // Text converts to MySQL's JSON type on assignment; MariaDB's JSON is text. (MariaDB has no
    // `CAST(… AS JSON)`.)
    json: "?",
};

impl Dialect {
    /// The dialect of `kind`: the one place each backend's SQL differs.
    pub(crate) fn of(kind: BackendKind) -> &'static Dialect {
        match kind {
            BackendKind::Sqlite => &SQLITE,
            BackendKind::Postgres => &POSTGRES,
            BackendKind::Mysql => &MYSQL,
        }
    }

    /// The text to bind to `{at}` for the instant `at`.
    pub(crate) fn at_text(&self, at: DateTime<Utc>) -> String {
        format!("{}{}", at.format("%Y-%m-%d %H:%M:%S%.6f"), self.at_zone)
    }

    /// `{at}`: the SQL that reads one bound [`at_text`](Dialect::at_text) as a timestamp (also a
    /// typed bind of [`EffectsTx`](crate::EffectsTx)).
    pub(crate) fn at(&self) -> &'static str {
        self.at
    }

    /// The SQL that reads one bound JSON text as the backend's JSON value.
    pub(crate) fn json(&self) -> &'static str {
        self.json
    }

    /// `{now}` for the clock offset `offset_us` (the query-plan tests fill a table with it).
    #[cfg(test)]
    pub(crate) fn now(&self, offset_us: i64) -> String {
        (self.now)(offset_us)
    }
}

/// Renders `template` for `kind` with the clock offset `offset_us` (µs; 0 in production), in the
/// vocabulary of the [module docs](self).
pub(crate) fn render(kind: BackendKind, offset_us: i64, template: &str) -> String {
    let d = Dialect::of(kind);
    let now = (d.now)(offset_us);
    let object = d.error_object.replace("{now_us}", "{us:{now}}");
    let append = d
        .append
        .replace("{max}", &MAX_ERROR_HISTORY.to_string())
        .replace("{obj}", &object);
    let mut out = template
        .replace("{append}", &append)
        .replace("{now_us}", "{us:{now}}")
        .replace("{plus_or_null}", &(d.plus_or_null)(offset_us))
        .replace("{plus}", &(d.plus)(offset_us))
        .replace("{at}", d.at)
        .replace("{bigint}", d.bigint)
        .replace("{now}", &now);
    // `{us:EXPR}`, innermost first (EXPR has no braces left once `{now}` is rendered).
    while let Some(start) = out.find("{us:") {
        let Some(len) = out[start..].find('}') else {
            break;
        };
        let expr = out[start + 4..start + len].to_owned();
        out.replace_range(start..=start + len, &d.to_us.replace("{}", &expr));
    }
    debug_assert!(!out.contains("{us:"), "unrendered placeholder in {out}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_renders_on_every_backend() {
        for kind in [
            BackendKind::Sqlite,
            BackendKind::Postgres,
            BackendKind::Mysql,
        ] {
            for off in [0, 31_000_000] {
                let sql = render(
                    kind,
                    off,
                    "{now} {plus} {plus_or_null} {us:created_at} {now_us} {at} {bigint} {append}",
                );
                assert!(!sql.contains('{'), "{sql}");
                // {plus}, {plus_or_null}, {at}, and the three binds of {append}.
                assert_eq!(sql.matches('?').count(), 6, "{sql}");
            }
        }
    }
}
