//! One statement type for every query the store sends, and the rows it reads back.
//!
//! Why not `diesel::sql_query`: it calls `AstPass::unsafe_to_cache_prepared()` (diesel 2.3,
//! `query_builder/sql_query.rs`), so its statements are never cached: PostgreSQL re-parses and
//! re-plans them through the unnamed statement, MySQL prepares and closes one per call (two extra
//! round trips). The query builder's `UPDATE` and `sql()` literals are likewise marked unsafe to
//! cache. [`Stmt`] holds SQL that is fixed per store (rendered once, see `sql.rs`) and does not
//! call `unsafe_to_cache_prepared`, so diesel's statement cache keeps it keyed by its SQL text
//! (`StatementCacheKey::Sql`): each connection prepares each statement once and reuses it.

use diesel::{
    QueryResult, QueryableByName,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    query_dsl::RunQueryDsl,
    sql_types::{BigInt, Binary, Nullable, Text, Untyped},
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
}

/// A statement: SQL with `?` placeholders and its binds, in order.
#[derive(Debug, Clone)]
pub(crate) struct Stmt<'a> {
    pub(crate) sql: &'a str,
    pub(crate) binds: Vec<Bind<'a>>,
}

impl<'a> Stmt<'a> {
    pub(crate) fn new(sql: &'a str, binds: Vec<Bind<'a>>) -> Self {
        debug_assert_eq!(
            sql.matches('?').count(),
            binds.len(),
            "placeholders and binds disagree in {sql}"
        );
        Self { sql, binds }
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

macro_rules! stmt_fragment {
    ($backend:ty) => {
        impl QueryFragment<$backend> for Stmt<'_> {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, $backend>) -> QueryResult<()> {
                let mut pieces = self.sql.split('?');
                out.push_sql(pieces.next().unwrap_or_default());
                for (piece, bind) in pieces.zip(&self.binds) {
                    match bind {
                        Bind::Bytes(v) => out.push_bind_param::<Binary, [u8]>(v)?,
                        Bind::OptBytes(v) => {
                            out.push_bind_param::<Nullable<Binary>, Option<&[u8]>>(v)?
                        }
                        Bind::Text(v) => out.push_bind_param::<Text, str>(v)?,
                        Bind::OptText(v) => {
                            out.push_bind_param::<Nullable<Text>, Option<&str>>(v)?
                        }
                        Bind::Int(v) => out.push_bind_param::<BigInt, i64>(v)?,
                    }
                    out.push_sql(piece);
                }
                Ok(())
            }
        }
    };
}

#[cfg(feature = "sqlite")]
stmt_fragment!(diesel::sqlite::Sqlite);
#[cfg(feature = "postgres")]
stmt_fragment!(diesel::pg::Pg);
#[cfg(feature = "mysql")]
stmt_fragment!(diesel::mysql::Mysql);

/// A whole `safe_jobs` row, timestamps as microseconds since the Unix epoch, plus the database's
/// now read in the same statement.
#[derive(Debug, QueryableByName)]
pub(crate) struct RawRow {
    #[diesel(sql_type = Binary)]
    pub digest: Vec<u8>,
    #[diesel(sql_type = Nullable<Binary>)]
    pub fingerprint: Option<Vec<u8>>,
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = BigInt)]
    pub fence: i64,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub owner: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub expires_us: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub result: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub failure: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    #[diesel(sql_type = Text)]
    pub effects: String,
    #[diesel(sql_type = BigInt)]
    pub created_us: i64,
    #[diesel(sql_type = BigInt)]
    pub updated_us: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub finalized_us: Option<i64>,
    #[diesel(sql_type = BigInt)]
    pub now_us: i64,
}

/// What a grant returns: the new fence, attempt and expiry.
#[derive(Debug, QueryableByName)]
pub(crate) struct GrantRow {
    #[diesel(sql_type = BigInt)]
    pub fence: i64,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    #[diesel(sql_type = BigInt)]
    pub expires_us: i64,
}

/// One integer (the database's now, or a new expiry), in microseconds.
#[derive(Debug, QueryableByName)]
pub(crate) struct MicrosRow {
    #[diesel(sql_type = BigInt)]
    pub us: i64,
}
