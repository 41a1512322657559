//! One statement type for every query the crate sends.
//!
//! Why not `diesel::sql_query`: it calls `AstPass::unsafe_to_cache_prepared()` (diesel 2.3,
//! `query_builder/sql_query.rs`), so its statements are never cached: PostgreSQL re-parses and
//! re-plans them through the unnamed statement, MySQL prepares and closes one per call (two extra
//! round trips). The query builder's `UPDATE` and `sql()` literals are likewise marked unsafe to
//! cache. A [`Stmt`] made with [`Stmt::new`] holds SQL that is fixed per store (rendered once, see
//! [`dialect`](super::dialect)) and does not call `unsafe_to_cache_prepared`, so diesel's
//! statement cache keeps it keyed by its SQL text (`StatementCacheKey::Sql`): each connection
//! prepares each statement once and reuses it. [`Stmt::uncached`] is for SQL whose text changes
//! from call to call (a batch insert sized to its batch), which would only fill the cache.

use diesel::{
    QueryResult,
    backend::Backend,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    query_dsl::RunQueryDsl,
    serialize::ToSql,
    sql_types::{BigInt, Binary, Bool, HasSqlType, Nullable, Text, Untyped},
};

/// A bind value. Placeholders are written `?` in the SQL; diesel renders them per backend
/// (`$1`, `$2` … on PostgreSQL).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bind<'a> {
    Bytes(&'a [u8]),
    OptBytes(Option<&'a [u8]>),
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
}

/// A statement: SQL with `?` placeholders, its binds in order, and whether each connection may
/// keep it prepared.
#[derive(Debug, Clone)]
pub(crate) struct Stmt<'a> {
    pub(crate) sql: &'a str,
    pub(crate) binds: Vec<Bind<'a>>,
    /// Kept in each connection's prepared-statement cache, keyed by its text.
    pub(crate) cache: bool,
}

impl<'a> Stmt<'a> {
    /// A statement each connection prepares once and reuses: for SQL rendered once per store.
    pub(crate) fn new(sql: &'a str, binds: Vec<Bind<'a>>) -> Self {
        debug_assert_eq!(
            sql.matches('?').count(),
            binds.len(),
            "placeholders and binds disagree in {sql}"
        );
        Self {
            sql,
            binds,
            cache: true,
        }
    }

    /// A statement prepared for this call only: for SQL whose text changes with its input.
    pub(crate) fn uncached(sql: &'a str, binds: Vec<Bind<'a>>) -> Self {
        Self {
            cache: false,
            ..Self::new(sql, binds)
        }
    }
}

impl QueryId for Stmt<'_> {
    type QueryId = ();
    // Not a static type id: the cache keys these statements by their SQL text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Stmt<'_> {
    type SqlType = Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Stmt<'_> {}

/// The SQL split at each `?`, with the binds pushed in between: one implementation for every
/// backend that can bind bytes, text, 64-bit integers and booleans.
impl<DB> QueryFragment<DB> for Stmt<'_>
where
    DB: Backend + HasSqlType<Binary> + HasSqlType<Text> + HasSqlType<BigInt> + HasSqlType<Bool>,
    [u8]: ToSql<Binary, DB>,
    str: ToSql<Text, DB>,
    i64: ToSql<BigInt, DB>,
    bool: ToSql<Bool, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        if !self.cache {
            out.unsafe_to_cache_prepared();
        }
        let mut pieces = self.sql.split('?');
        out.push_sql(pieces.next().unwrap_or_default());
        for (piece, bind) in pieces.zip(&self.binds) {
            match bind {
                Bind::Bytes(v) => out.push_bind_param::<Binary, [u8]>(v)?,
                Bind::OptBytes(v) => out.push_bind_param::<Nullable<Binary>, Option<&[u8]>>(v)?,
                Bind::Text(v) => out.push_bind_param::<Text, str>(v)?,
                Bind::OptText(v) => out.push_bind_param::<Nullable<Text>, Option<&str>>(v)?,
                Bind::Int(v) => out.push_bind_param::<BigInt, i64>(v)?,
                Bind::OptInt(v) => out.push_bind_param::<Nullable<BigInt>, Option<i64>>(v)?,
                Bind::Bool(v) => out.push_bind_param::<Bool, bool>(v)?,
            }
            out.push_sql(piece);
        }
        Ok(())
    }
}
