//! [`ScheduleStore`] on the SQL backends: the `safe_queue_schedules` table, and a fire that is
//! the row's conditional update plus the tick jobs' enqueue in one write transaction.

use chrono::{DateTime, Utc};
use diesel::{
    QueryableByName,
    sql_types::{BigInt, Nullable, Text},
};
use safejob_core::{
    queue::Enqueued,
    schedule::{Fire, ScheduleRow, ScheduleStore},
    store::StoreError,
};

use super::{
    DieselQueue, enqueue,
    sql::render,
    tx::{Begin, End, QCtx, is_unique_violation},
};
use crate::backend::{
    Bind, DbConnection, Dialect, Stmt,
    pool::{PooledConn, with_conn},
};

/// Every row, by name.
const LIST: &str = "SELECT name, trigger_kind, expression, time_zone, missed, kind, \
    CAST(paused AS {bigint}) AS paused, {us:next_run_at} AS next_us, {us:last_tick} AS last_us, \
    revision FROM safe_queue_schedules ORDER BY name";

/// A new row (name, trigger_kind, expression, time_zone, missed, kind, paused, next_run_at,
/// last_tick); a unique violation means the name exists.
const INSERT: &str = "INSERT INTO safe_queue_schedules (name, trigger_kind, expression, \
    time_zone, missed, kind, paused, next_run_at, last_tick, revision, updated_at) \
    VALUES (?, ?, ?, ?, ?, ?, ?, {at}, {at}, 0, {now})";

/// The row rewritten where it still has the revision it was read at (…, name, revision).
const UPDATE: &str = "UPDATE safe_queue_schedules SET trigger_kind = ?, expression = ?, \
    time_zone = ?, missed = ?, kind = ?, paused = ?, next_run_at = {at}, last_tick = {at}, \
    revision = revision + 1, updated_at = {now} WHERE name = ? AND revision = ?";

/// A fire's half on the row: next_run_at, last_tick (NULL keeps it), name, revision. Applies
/// only to an unpaused row that still has the revision the scheduler read.
const FIRE: &str = "UPDATE safe_queue_schedules SET next_run_at = {at}, \
    last_tick = COALESCE({at}, last_tick), revision = revision + 1, updated_at = {now} \
    WHERE name = ? AND revision = ? AND paused = 0";

/// Deletes a row (name).
const REMOVE: &str = "DELETE FROM safe_queue_schedules WHERE name = ?";

#[derive(QueryableByName)]
struct SchedRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    trigger_kind: String,
    #[diesel(sql_type = Text)]
    expression: String,
    #[diesel(sql_type = Text)]
    time_zone: String,
    #[diesel(sql_type = Text)]
    missed: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = BigInt)]
    paused: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    next_us: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    last_us: Option<i64>,
    #[diesel(sql_type = BigInt)]
    revision: i64,
}

impl SchedRow {
    fn into_row(self) -> Result<ScheduleRow, StoreError> {
        let name = self.name.clone();
        let at = |us: Option<i64>| {
            us.map(|us| {
                DateTime::from_timestamp_micros(us).ok_or_else(|| StoreError::CorruptRow {
                    // The port's CorruptRow names a key; a schedule row is named by table and name.
                    digest: format!("safe_queue_schedules {name:?}"),
                    detail: format!("timestamp {us}"),
                })
            })
            .transpose()
        };
        Ok(ScheduleRow {
            next_run_at: at(self.next_us)?,
            last_tick: at(self.last_us)?,
            name: self.name,
            trigger: self.trigger_kind,
            expression: self.expression,
            time_zone: self.time_zone,
            missed: self.missed,
            kind: self.kind,
            paused: self.paused != 0,
            revision: self.revision,
        })
    }
}

impl QCtx<'_> {
    fn sql_of(&self, template: &str) -> String {
        render(self.sql.kind, self.sql.offset, template)
    }

    fn at_text(&self, at: Option<DateTime<Utc>>) -> Option<String> {
        at.map(|t| Dialect::of(self.sql.kind).at_text(t))
    }

    fn schedules<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
    ) -> Result<Vec<ScheduleRow>, StoreError> {
        let text = self.sql_of(LIST);
        let stmt = Stmt::new(&text, vec![]);
        let rows: Vec<SchedRow> = self.run(c, |conn| conn.load(&stmt))?;
        rows.into_iter().map(SchedRow::into_row).collect()
    }

    fn insert_schedule<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        row: &ScheduleRow,
    ) -> Result<bool, StoreError> {
        let text = self.sql_of(INSERT);
        let (next, last) = (self.at_text(row.next_run_at), self.at_text(row.last_tick));
        let stmt = Stmt::new(
            &text,
            vec![
                Bind::Text(&row.name),
                Bind::Text(&row.trigger),
                Bind::Text(&row.expression),
                Bind::Text(&row.time_zone),
                Bind::Text(&row.missed),
                Bind::Text(&row.kind),
                Bind::Int(i64::from(row.paused)),
                Bind::OptText(next.as_deref()),
                Bind::OptText(last.as_deref()),
            ],
        );
        // The name exists already: a unique violation, not an error.
        let inserted = self.run(c, |conn| match conn.exec(&stmt) {
            Err(e) if is_unique_violation(&e) => Ok(0),
            other => other,
        })?;
        Ok(inserted == 1)
    }

    fn update_schedule<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        row: &ScheduleRow,
        revision: i64,
    ) -> Result<bool, StoreError> {
        let text = self.sql_of(UPDATE);
        let (next, last) = (self.at_text(row.next_run_at), self.at_text(row.last_tick));
        let stmt = Stmt::new(
            &text,
            vec![
                Bind::Text(&row.trigger),
                Bind::Text(&row.expression),
                Bind::Text(&row.time_zone),
                Bind::Text(&row.missed),
                Bind::Text(&row.kind),
                Bind::Int(i64::from(row.paused)),
                Bind::OptText(next.as_deref()),
                Bind::OptText(last.as_deref()),
                Bind::Text(&row.name),
                Bind::Int(revision),
            ],
        );
        Ok(self.run(c, |conn| conn.exec(&stmt))? == 1)
    }

    fn fire<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        fire: &Fire<'_>,
    ) -> Result<Option<Vec<Enqueued>>, StoreError> {
        let text = self.sql_of(FIRE);
        let (next, last) = (self.at_text(fire.next_run_at), self.at_text(fire.last_tick));
        let stmt = Stmt::new(
            &text,
            vec![
                Bind::OptText(next.as_deref()),
                Bind::OptText(last.as_deref()),
                Bind::Text(fire.name),
                Bind::Int(fire.revision),
            ],
        );
        self.transaction(c, Begin::Write, |c| {
            if c.conn.exec(&stmt)? != 1 {
                // Another scheduler fired this revision, or the row is paused or gone.
                return Ok(End::Rollback(None));
            }
            let answers = enqueue::enqueue(&self.sql, &mut c.conn, fire.jobs)?;
            Ok(End::Commit(Some(answers)))
        })
    }

    fn remove_schedule<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        name: &str,
    ) -> Result<bool, StoreError> {
        let text = self.sql_of(REMOVE);
        let stmt = Stmt::new(&text, vec![Bind::Text(name)]);
        Ok(self.run(c, |conn| conn.exec(&stmt))? == 1)
    }
}

impl ScheduleStore for DieselQueue {
    fn schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.schedules(conn))
    }

    fn insert_schedule(&self, row: &ScheduleRow) -> Result<bool, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.insert_schedule(conn, row))
    }

    fn update_schedule(&self, row: &ScheduleRow, revision: i64) -> Result<bool, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.update_schedule(conn, row, revision))
    }

    fn fire(&self, fire: &Fire<'_>) -> Result<Option<Vec<Enqueued>>, StoreError> {
        let q = self.ctx();
        let answer = with_conn!(self.store, conn => q.fire(conn, fire))?;
        if answer
            .as_ref()
            .is_some_and(|a| a.iter().any(|e| !e.is_duplicate()))
        {
            self.wake_in_process();
        }
        Ok(answer)
    }

    fn remove_schedule(&self, name: &str) -> Result<bool, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.remove_schedule(conn, name))
    }
}
