//! Counting what SQLite writes to its WAL while the benchmark runs, checkpoints and all.
//!
//! SQLite appends frames (a 24-byte header and a page) to `<db>-wal`; a frame whose header holds
//! the database size ends a committed transaction. After a checkpoint has copied every frame
//! back into the database, the next writer *restarts* the WAL: it writes a new header with new
//! salts and overwrites the file from its first frame, so the file's length says nothing about
//! what was written. A [`WalTracker`] polled every few milliseconds follows the file: it counts
//! each frame carrying the current salts once, and when the salts change it first counts the
//! old cycle's frames still lying beyond the new cycle's (the new cycle overwrites from the
//! start, the old frames past it survive). If the new cycle has already overwritten old frames
//! it had not seen, the cycle is recorded as `lost` and the counts of that stretch are not
//! reported (never guessed). Format: <https://sqlite.org/fileformat2.html#walformat>.

use std::{
    fs::File,
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

/// What a tracker has counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalCounts {
    /// Frames written.
    pub frames: u64,
    /// Frames that end a committed transaction: one per committed write transaction.
    pub commits: u64,
    /// Bytes written: each cycle's 32-byte header, each frame's header and page.
    pub bytes: u64,
    /// Restarts after which frames had been overwritten before they were read.
    pub lost: u64,
}

/// Follows one WAL file (see the module doc).
#[derive(Debug, Default)]
pub struct WalTracker {
    salt: Option<(u32, u32)>,
    page: u64,
    /// Frames of the current cycle counted so far.
    seen: u64,
    counts: WalCounts,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads `buf.len()` bytes at `offset`; `false` if the file ends first.
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    match file.read_exact_at(buf, offset) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

impl WalTracker {
    /// The counts so far.
    pub fn counts(&self) -> WalCounts {
        self.counts
    }

    /// The salts and "ends a commit" flag of frame `i` (1-based), if the file holds it whole.
    fn frame(&self, file: &File, i: u64) -> io::Result<Option<((u32, u32), bool)>> {
        let mut h = [0_u8; 24];
        let at = 32 + (i - 1) * (24 + self.page);
        // The page must be there too: a frame being written is counted at the next poll.
        let mut last = [0_u8; 1];
        if !read_at(file, &mut h, at)? || !read_at(file, &mut last, at + 24 + self.page - 1)? {
            return Ok(None);
        }
        Ok(Some(((be32(&h, 8), be32(&h, 12)), be32(&h, 4) != 0)))
    }

    /// Counts frames `seen + 1…` while they carry `salt`.
    fn scan(&mut self, file: &File, salt: (u32, u32)) -> io::Result<()> {
        while let Some((s, commit)) = self.frame(file, self.seen + 1)? {
            if s != salt {
                break;
            }
            self.seen += 1;
            self.counts.frames += 1;
            self.counts.commits += u64::from(commit);
            self.counts.bytes += 24 + self.page;
        }
        Ok(())
    }

    /// Reads what was written since the last poll.
    pub fn poll(&mut self, file: &File) -> io::Result<()> {
        let mut h = [0_u8; 32];
        if !read_at(file, &mut h, 0)? {
            return Ok(()); // empty (not yet written, or truncated)
        }
        let (magic, page) = (be32(&h, 0), u64::from(be32(&h, 8)));
        if magic & !1 != 0x377f_0682 || !(512..=65_536).contains(&page) {
            return Ok(()); // a header being written
        }
        let salt = (be32(&h, 16), be32(&h, 20));
        if self.salt != Some(salt) {
            if let Some(old) = self.salt {
                // The new cycle overwrote frames from the first; frame seen + 1 still carries
                // the old salts unless it was overwritten before this poll saw it.
                match self.frame(file, self.seen + 1)? {
                    Some((s, _)) if s == salt => self.counts.lost += 1,
                    _ => self.scan(file, old)?,
                }
            }
            self.salt = Some(salt);
            self.page = page;
            self.seen = 0;
            self.counts.bytes += 32;
        }
        self.scan(file, salt)
    }
}

/// The watcher's state: the tracker, the file once it exists, the first error met.
type Watched = (WalTracker, Option<File>, Option<io::Error>);

/// A thread polling a WAL file every `every` until dropped.
pub struct WalWatch {
    tracker: Arc<Mutex<Watched>>,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl WalWatch {
    /// Starts watching `path` (which may not exist yet).
    pub fn start(path: &Path, every: Duration) -> Self {
        let tracker = Arc::new(Mutex::new((WalTracker::default(), None, None)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (tracker, stop, path) = (tracker.clone(), stop.clone(), path.to_owned());
            thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    if let Ok(mut t) = tracker.lock() {
                        poll_locked(&mut t, &path);
                    }
                    thread::sleep(every);
                }
            })
        };
        Self {
            tracker,
            path: path.to_owned(),
            stop,
            thread: Some(thread),
        }
    }

    /// Polls once more and returns the counts so far, or the first error the polls met.
    pub fn counts(&self) -> io::Result<WalCounts> {
        let mut t = self
            .tracker
            .lock()
            .map_err(|_| io::Error::other("the WAL watcher panicked"))?;
        poll_locked(&mut t, &self.path);
        match t.2.take() {
            Some(e) => Err(e),
            None => Ok(t.0.counts()),
        }
    }
}

fn poll_locked(t: &mut Watched, path: &Path) {
    if t.2.is_some() {
        return;
    }
    if t.1.is_none() {
        match File::open(path) {
            Ok(f) => t.1 = Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                t.2 = Some(e);
                return;
            }
        }
    }
    if let Some(file) = &t.1
        && let Err(e) = t.0.poll(file)
    {
        t.2 = Some(e);
    }
}

impl Drop for WalWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const PAGE: u32 = 512;

    fn header(salt: (u32, u32)) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [0x377f_0682_u32, 3_007_000, PAGE, 0, salt.0, salt.1, 0, 0] {
            b.extend(w.to_be_bytes());
        }
        b
    }

    fn frame(salt: (u32, u32), commit: bool) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [1_u32, u32::from(commit) * 5, salt.0, salt.1, 0, 0] {
            b.extend(w.to_be_bytes());
        }
        b.extend(std::iter::repeat_n(0_u8, PAGE as usize));
        b
    }

    /// Writes `bytes` at `offset` of the file at `path`.
    fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        f.write_all_at(bytes, offset).unwrap();
    }

    fn at(i: u64) -> u64 {
        32 + (i - 1) * (24 + u64::from(PAGE))
    }

    // Catches: frames counted again at every poll (no `seen`), a restart's surviving old frames
    // not counted (the "scan the old cycle" step removed), every frame counted as a commit, and
    // a half-written frame counted.
    #[test]
    fn frames_are_counted_once_across_polls_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db-wal");
        let (a, b) = ((1, 7), (2, 9));
        let mut t = WalTracker::default();
        std::fs::File::create(&path).unwrap();
        let file = File::open(&path).unwrap();
        t.poll(&file).unwrap();
        assert_eq!(t.counts(), WalCounts::default(), "an empty WAL");

        write_at(&path, 0, &header(a));
        write_at(&path, at(1), &frame(a, false));
        write_at(&path, at(2), &frame(a, true));
        t.poll(&file).unwrap();
        t.poll(&file).unwrap();
        assert_eq!(
            (t.counts().frames, t.counts().commits),
            (2, 1),
            "counted once"
        );
        // Two more, then a restart that rewrites frame 1 before the next poll: frames 3 and 4
        // of the old cycle survive beyond it and are counted.
        write_at(&path, at(3), &frame(a, false));
        write_at(&path, at(4), &frame(a, true));
        write_at(&path, 0, &header(b));
        write_at(&path, at(1), &frame(b, true));
        // A frame whose page is not all written yet.
        let mut torn = frame(b, true);
        torn.truncate(100);
        let end = at(5);
        write_at(&path, end, &torn);
        t.poll(&file).unwrap();
        let c = t.counts();
        assert_eq!((c.frames, c.commits, c.lost), (5, 3, 0));
        assert_eq!(c.bytes, 2 * 32 + 5 * (24 + u64::from(PAGE)));
    }

    // Catches: a restart that overwrote unseen frames reported as if nothing was lost.
    #[test]
    fn frames_overwritten_before_they_were_seen_are_reported_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("y.db-wal");
        let (a, b) = ((1, 7), (2, 9));
        let mut t = WalTracker::default();
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&header(a)).unwrap();
        f.write_all(&frame(a, true)).unwrap();
        let file = File::open(&path).unwrap();
        t.poll(&file).unwrap();
        // Frame 2 of cycle a is written and overwritten by cycle b's frames 1 and 2 unseen.
        write_at(&path, at(2), &frame(a, true));
        write_at(&path, 0, &header(b));
        write_at(&path, at(1), &frame(b, false));
        write_at(&path, at(2), &frame(b, true));
        t.poll(&file).unwrap();
        assert_eq!(t.counts().lost, 1);
    }

    #[test]
    fn the_watcher_follows_a_file_created_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.db-wal");
        let w = WalWatch::start(&path, Duration::from_millis(1));
        assert_eq!(w.counts().unwrap(), WalCounts::default());
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&header((3, 3))).unwrap();
        f.write_all(&frame((3, 3), true)).unwrap();
        let c = w.counts().unwrap();
        assert_eq!((c.frames, c.commits), (1, 1));
    }
}
