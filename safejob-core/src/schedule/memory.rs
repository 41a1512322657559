//! [`ScheduleStore`] on the [`MemoryQueue`]: the rows in the queue's map, under the queue's lock,
//! so that a fire and its enqueue are one step.

use super::store::{Fire, ScheduleRow, ScheduleStore};
use crate::{
    queue::{Enqueued, MemoryQueue, QueueStore, memory::due_times},
    store::StoreError,
};

impl ScheduleStore for MemoryQueue {
    fn schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        Ok(self.lock().schedules.values().cloned().collect())
    }

    fn insert_schedule(&self, row: &ScheduleRow) -> Result<bool, StoreError> {
        let now = self.now()?;
        let mut inner = self.lock();
        if inner.schedules.contains_key(&row.name) {
            return Ok(false);
        }
        let stored = ScheduleRow {
            revision: 0,
            ..row.clone()
        };
        inner.history.schedule(None, &stored, now);
        inner.schedules.insert(row.name.clone(), stored);
        Ok(true)
    }

    fn update_schedule(&self, row: &ScheduleRow, revision: i64) -> Result<bool, StoreError> {
        let now = self.now()?;
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(stored) = inner
            .schedules
            .get_mut(&row.name)
            .filter(|s| s.revision == revision)
        else {
            return Ok(false);
        };
        let before = stored.clone();
        *stored = ScheduleRow {
            revision: revision + 1,
            ..row.clone()
        };
        inner.history.schedule(Some(&before), stored, now);
        Ok(true)
    }

    fn fire(&self, fire: &Fire<'_>) -> Result<Option<Vec<Enqueued>>, StoreError> {
        let now = self.now()?;
        let rows = due_times(now, fire.jobs)?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(stored) = inner
            .schedules
            .get_mut(fire.name)
            .filter(|s| s.revision == fire.revision && !s.paused)
        else {
            return Ok(None);
        };
        let before = stored.clone();
        stored.revision += 1;
        stored.next_run_at = fire.next_run_at;
        if fire.last_tick.is_some() {
            stored.last_tick = fire.last_tick;
        }
        inner.history.schedule(Some(&before), stored, now);
        let answers = inner.insert(now, &rows);
        drop(guard);
        if !answers.is_empty() {
            self.wake();
        }
        Ok(Some(answers))
    }

    fn remove_schedule(&self, name: &str) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let removed = inner.schedules.remove(name).is_some();
        // The schedule's history goes with its row, under the same lock.
        inner
            .history
            .forget(&[crate::history::Subject::Schedule(name.to_owned())]);
        Ok(removed)
    }
}
