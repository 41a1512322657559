//! [`EffectsTx`]: writes from a transactional `on_succeeded_once` that run unchanged on SQLite,
//! PostgreSQL and MySQL/MariaDB.
//!
//! A hook gets one with [`TransactionExt::effects_tx`](crate::TransactionExt::effects_tx),
//! whatever the store's backend, and writes through it with typed values ([`SqlValue`]); every
//! write runs on the finalize transaction's connection and commits with `succeeded`, or not at
//! all. The SQL is the crate's own statement type, so one placeholder, `?`, serves every backend
//! (diesel sends it as `$1`, `$2` … to PostgreSQL), and each value is bound with the backend's
//! spelling of its type from the one [`Dialect`] table. What stays backend-specific is in
//! [`EffectsTx`]'s docs.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::backend::{BackendKind, Bind, ConnectionRef, Dialect, Stmt};

/// A value bound to one `?` of an [`EffectsTx`] statement.
///
/// | value | SQLite | PostgreSQL | MySQL / MariaDB |
/// |---|---|---|---|
/// | `Int` | `INTEGER` | `int8` (assigned to `int4` / `int2` columns as usual) | `BIGINT` |
/// | `Text` | `TEXT` | `text` | `VARCHAR` / `TEXT` |
/// | `Bool` | `1` / `0` | `boolean` | `1` / `0` (`BOOLEAN` is `TINYINT(1)`) |
/// | `Json` | the JSON text | `jsonb` (assigned to `json`, `jsonb` or text columns) | the JSON text (MySQL converts it to `JSON`) |
/// | `Timestamp` | text `YYYY-MM-DD HH:MM:SS.SSS`, UTC (milliseconds) | `timestamptz` (use `timestamptz` columns: a `timestamp` column would take the session's time zone) | `DATETIME(6)`, UTC |
/// | `Null` | `NULL` | `NULL` | `NULL` |
///
/// `From` conversions exist for `i64`, `i32`, `u32`, `&str`, `&String`, `bool`, `&Value`,
/// `DateTime<Utc>` and `Option` of each (`None` is `Null`). A `u64` does not convert by itself:
/// convert it with `i64::try_from`, so that a value out of range is your error, not a wrap.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum SqlValue<'a> {
    /// A 64-bit integer.
    Int(i64),
    /// Text.
    Text(&'a str),
    /// A boolean.
    Bool(bool),
    /// A JSON document.
    Json(&'a Value),
    /// An instant, written in UTC.
    Timestamp(DateTime<Utc>),
    /// SQL `NULL` (written into the statement as the keyword, so it fits a column of any type).
    Null,
}

impl From<i64> for SqlValue<'_> {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<i32> for SqlValue<'_> {
    fn from(v: i32) -> Self {
        Self::Int(v.into())
    }
}

impl From<u32> for SqlValue<'_> {
    fn from(v: u32) -> Self {
        Self::Int(v.into())
    }
}

impl<'a> From<&'a str> for SqlValue<'a> {
    fn from(v: &'a str) -> Self {
        Self::Text(v)
    }
}

impl<'a> From<&'a String> for SqlValue<'a> {
    fn from(v: &'a String) -> Self {
        Self::Text(v)
    }
}

impl From<bool> for SqlValue<'_> {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl<'a> From<&'a Value> for SqlValue<'a> {
    fn from(v: &'a Value) -> Self {
        Self::Json(v)
    }
}

impl From<DateTime<Utc>> for SqlValue<'_> {
    fn from(v: DateTime<Utc>) -> Self {
        Self::Timestamp(v)
    }
}

impl<'a, T: Into<SqlValue<'a>>> From<Option<T>> for SqlValue<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

/// A write through [`EffectsTx`] was refused. Return it from `on_succeeded_once`: the whole
/// finalize, `succeeded` and every write made so far, rolls back and the attempt is retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EffectsTxError {
    /// The SQL's `?` placeholders and the values given differ in number.
    #[error(
        "the SQL has {placeholders} `?` placeholder(s) but {values} value(s) were given \
         (write `?` for every value, on every backend)"
    )]
    PlaceholderCount {
        /// `?` in the SQL.
        placeholders: usize,
        /// Values given.
        values: usize,
    },
    /// A table or column name given to `insert` / `update` is not a plain SQL identifier.
    #[error(
        "{name:?} is not a plain SQL identifier (ASCII letters, digits and `_`, not starting \
         with a digit, at most 63 bytes; a table may be `schema.table`): write the statement \
         with `execute`"
    )]
    InvalidIdentifier {
        /// The name given.
        name: String,
    },
    /// `insert` or `update` was given no column to write.
    #[error("{operation} needs at least one column to write")]
    NoColumns {
        /// `insert` or `update`.
        operation: &'static str,
    },
    /// `update` was given no filter: it would change every row of the table.
    #[error(
        "update of {table} has no filter and would change every row: give at least one \
         (column, value) to match, or write the statement with `execute`"
    )]
    NoFilter {
        /// The table.
        table: String,
    },
    /// The database refused the statement (inside the finalize transaction: return this error
    /// and the whole finalize rolls back).
    #[error("the effects write failed: {0}")]
    Database(#[source] diesel::result::Error),
}

/// The finalize transaction of a transactional `on_succeeded_once`, on any backend: typed writes
/// that commit with `succeeded`, or not at all.
///
/// Get one with [`TransactionExt::effects_tx`](crate::TransactionExt::effects_tx). The same job
/// code then runs on SQLite in tests and on PostgreSQL or MySQL/MariaDB in production:
///
/// ```
/// use safejob_core::EffectsContext;
/// use safejob_diesel::{EffectsTxError, SqlValue, TransactionExt, TxError};
///
/// #[derive(Debug, thiserror::Error)]
/// enum ChargeError {
///     #[error(transparent)]
///     NoTransaction(#[from] TxError),
///     #[error(transparent)]
///     Write(#[from] EffectsTxError),
///     #[error("wallet {0} has no row")]
///     NoWallet(String),
/// }
///
/// fn on_succeeded_once(
///     ctx: &mut EffectsContext<'_>,
///     charge: &str,
///     wallet: &str,
///     cents: i64,
/// ) -> Result<(), ChargeError> {
///     let mut tx = ctx.effects_tx()?; // NotTransactional outside EffectsMode::Transactional
///     tx.insert("wallet_ledger", &[
///         ("charge_id", charge.into()),
///         ("wallet", wallet.into()),
///         ("cents", SqlValue::Int(-cents)),
///     ])?;
///     let matched = tx.execute(
///         "UPDATE wallets SET balance_cents = balance_cents - ? WHERE id = ?",
///         &[cents.into(), wallet.into()],
///     )?;
///     if matched != 1 {
///         return Err(ChargeError::NoWallet(wallet.to_owned())); // rolls back the ledger row too
///     }
///     Ok(())
/// }
/// ```
///
/// Every statement is prepared once per pooled connection and kept, keyed by its text (as the
/// store's own are): pass values as [`SqlValue`]s, never formatted into the SQL, which would
/// also fill that cache. The affected-row counts are rows *matched* on every backend (MySQL is
/// connected with `CLIENT_FOUND_ROWS`), so an `UPDATE` that sets a value already there counts
/// its row.
///
/// # What stays backend-specific
///
/// * **Statements whose syntax differs**: upserts and conflict handling (`ON CONFLICT … DO
///   NOTHING` on SQLite and PostgreSQL, `INSERT IGNORE` / `ON DUPLICATE KEY UPDATE` on MySQL),
///   `RETURNING`, date and JSON functions, quoted identifiers. Branch on
///   [`backend`](EffectsTx::backend), or write them with diesel on
///   [`connection`](EffectsTx::connection).
/// * **Reads**: `EffectsTx` writes and reports rows matched; read with diesel on
///   [`connection`](EffectsTx::connection).
/// * **The schema** (DDL and column types) is the application's, per backend.
/// * **`?` is always a placeholder**: a literal question mark in the SQL text (or PostgreSQL's
///   `jsonb` `?` operators) must be bound as a value instead.
/// * **What a database error does to the transaction** differs per backend (docs/guarantees.md,
///   "What a transactional effects hook may and may not do with errors"): return the
///   [`EffectsTxError`] from the hook, and the whole finalize rolls back.
pub struct EffectsTx<'c> {
    conn: ConnectionRef<'c>,
}

impl<'c> EffectsTx<'c> {
    pub(crate) fn new(conn: ConnectionRef<'c>) -> Self {
        Self { conn }
    }

    /// The backend of the finalize transaction, for the statements that differ (see "What stays
    /// backend-specific" above).
    pub fn backend(&self) -> BackendKind {
        self.conn.backend()
    }

    /// The finalize transaction's connection, for diesel's own API (reads, backend-specific
    /// SQL). What it writes commits with `succeeded` as well.
    pub fn connection(&mut self) -> &mut ConnectionRef<'c> {
        &mut self.conn
    }

    /// Runs `sql`, with one `?` per value of `values`, in the finalize transaction; the number
    /// of rows it matched.
    ///
    /// ```no_run
    /// # fn hook(tx: &mut safejob_diesel::EffectsTx<'_>) -> Result<(), safejob_diesel::EffectsTxError> {
    /// use safejob_diesel::SqlValue;
    /// let now = chrono::Utc::now();
    /// tx.execute(
    ///     "UPDATE payouts SET paid = ?, paid_at = ?, note = ? WHERE id = ?",
    ///     &[true.into(), now.into(), SqlValue::Null, 42_i64.into()],
    /// )?;
    /// # Ok(()) }
    /// ```
    pub fn execute(&mut self, sql: &str, values: &[SqlValue<'_>]) -> Result<usize, EffectsTxError> {
        let placeholders = sql.matches('?').count();
        if placeholders != values.len() {
            return Err(EffectsTxError::PlaceholderCount {
                placeholders,
                values: values.len(),
            });
        }
        let dialect = Dialect::of(self.backend());
        let prepared: Vec<(&str, Prepared<'_>)> =
            values.iter().map(|v| Prepared::of(dialect, v)).collect();
        let mut rendered = String::with_capacity(sql.len());
        let mut pieces = sql.split('?');
        rendered.push_str(pieces.next().unwrap_or_default());
        for (piece, (placeholder, _)) in pieces.zip(&prepared) {
            rendered.push_str(placeholder);
            rendered.push_str(piece);
        }
        let binds = prepared.iter().filter_map(|(_, p)| p.bind()).collect();
        self.conn
            .exec(&Stmt::new(&rendered, binds))
            .map_err(EffectsTxError::Database)
    }

    /// `INSERT INTO table (columns…) VALUES (values…)` in the finalize transaction; the number of
    /// rows inserted. `table` and the columns are plain identifiers (a table may be
    /// `schema.table`); anything else (quoted names, conflict clauses) is written with
    /// [`execute`](EffectsTx::execute).
    pub fn insert(
        &mut self,
        table: &str,
        columns: &[(&str, SqlValue<'_>)],
    ) -> Result<usize, EffectsTxError> {
        identifier(table, true)?;
        if columns.is_empty() {
            return Err(EffectsTxError::NoColumns {
                operation: "insert",
            });
        }
        let mut names = Vec::with_capacity(columns.len());
        for (name, _) in columns {
            names.push(identifier(name, false)?);
        }
        let marks = vec!["?"; columns.len()].join(", ");
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES ({marks})",
            names.join(", ")
        );
        let values: Vec<SqlValue<'_>> = columns.iter().map(|(_, v)| *v).collect();
        self.execute(&sql, &values)
    }

    /// `UPDATE table SET set… WHERE filter…` in the finalize transaction, the filter's
    /// `(column, value)` pairs joined by `AND` (a `Null` value matches `IS NULL`); the number of
    /// rows matched. An empty filter is refused ([`EffectsTxError::NoFilter`]): an update of
    /// every row is written with [`execute`](EffectsTx::execute).
    pub fn update(
        &mut self,
        table: &str,
        set: &[(&str, SqlValue<'_>)],
        filter: &[(&str, SqlValue<'_>)],
    ) -> Result<usize, EffectsTxError> {
        identifier(table, true)?;
        if set.is_empty() {
            return Err(EffectsTxError::NoColumns {
                operation: "update",
            });
        }
        if filter.is_empty() {
            return Err(EffectsTxError::NoFilter {
                table: table.to_owned(),
            });
        }
        let mut sql = format!("UPDATE {table} SET ");
        let mut values = Vec::with_capacity(set.len() + filter.len());
        for (i, (name, value)) in set.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(sql, "{sep}{} = ?", identifier(name, false)?);
            values.push(*value);
        }
        for (i, (name, value)) in filter.iter().enumerate() {
            let sep = if i == 0 { " WHERE " } else { " AND " };
            let name = identifier(name, false)?;
            if *value == SqlValue::Null {
                let _ = write!(sql, "{sep}{name} IS NULL");
            } else {
                let _ = write!(sql, "{sep}{name} = ?");
                values.push(*value);
            }
        }
        self.execute(&sql, &values)
    }
}

/// A value ready to bind: what it is sent as.
enum Prepared<'v> {
    /// Written into the SQL as `NULL`: nothing bound.
    Null,
    Int(i64),
    Text(&'v str),
    Bool(bool),
    /// Text made for the bind: a JSON document, or an instant as [`Dialect::at_text`].
    Owned(String),
}

impl<'v> Prepared<'v> {
    /// The SQL that takes the place of the value's `?`, and the value to bind there.
    fn of(dialect: &Dialect, value: &SqlValue<'v>) -> (&'static str, Self) {
        match *value {
            SqlValue::Null => ("NULL", Self::Null),
            SqlValue::Int(v) => ("?", Self::Int(v)),
            SqlValue::Text(v) => ("?", Self::Text(v)),
            SqlValue::Bool(v) => ("?", Self::Bool(v)),
            SqlValue::Json(v) => (dialect.json(), Self::Owned(v.to_string())),
            SqlValue::Timestamp(at) => (dialect.at(), Self::Owned(dialect.at_text(at))),
        }
    }

    fn bind(&self) -> Option<Bind<'_>> {
        match self {
            Self::Null => None,
            Self::Int(v) => Some(Bind::Int(*v)),
            Self::Text(v) => Some(Bind::Text(v)),
            Self::Bool(v) => Some(Bind::Bool(*v)),
            Self::Owned(v) => Some(Bind::Text(v)),
        }
    }
}

/// The longest identifier accepted: PostgreSQL's limit (63 bytes; MySQL's is 64).
const MAX_IDENTIFIER: usize = 63;

/// `name` if it is a plain identifier (`schema.name` when `qualified` is allowed).
fn identifier(name: &str, qualified: bool) -> Result<&str, EffectsTxError> {
    let plain = |part: &str| {
        part.len() <= MAX_IDENTIFIER
            && part
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let ok = match name.split_once('.') {
        Some((schema, table)) if qualified => plain(schema) && plain(table),
        Some(_) => false,
        None => plain(name),
    };
    if ok {
        Ok(name)
    } else {
        Err(EffectsTxError::InvalidIdentifier {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_plain_names() {
        for ok in ["ledger", "_x1", "app.ledger", "Wallet_Ledger"] {
            assert_eq!(identifier(ok, true).unwrap(), ok);
        }
        assert!(identifier("app.ledger", false).is_err());
        let long = "x".repeat(64);
        for bad in [
            "",
            "1ledger",
            "led ger",
            "ledger;DROP",
            "\"ledger\"",
            "a.b.c",
            ".ledger",
            "app.",
            "lédger",
            long.as_str(),
        ] {
            assert!(
                matches!(
                    identifier(bad, true),
                    Err(EffectsTxError::InvalidIdentifier { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn options_and_conversions_map_to_their_values() {
        let json = serde_json::json!({"a": 1});
        let text = String::from("t");
        assert_eq!(SqlValue::from(7_i32), SqlValue::Int(7));
        assert_eq!(SqlValue::from(7_u32), SqlValue::Int(7));
        assert_eq!(SqlValue::from(&text), SqlValue::Text("t"));
        assert_eq!(SqlValue::from(&json), SqlValue::Json(&json));
        assert_eq!(SqlValue::from(None::<i64>), SqlValue::Null);
        assert_eq!(SqlValue::from(Some(true)), SqlValue::Bool(true));
    }
}
