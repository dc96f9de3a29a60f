//! Removing a stream that is in use (`ipcress rm --force`): its holders are
//! told, then its files go.

use std::path::Path;

use crate::api::stream::{Stream, dir_to_remove};
use crate::error::Result;
use crate::format::meta;
use crate::protocol::attach::delete_stream_dir;
use crate::storage::MetaMap;
use crate::sync::atomic::Ordering::*;
use crate::sys;

impl Stream {
    /// Remove stream `name` under `root` even while processes have it
    /// open: they are told first (the meta file's `REMOVED` word), so that
    /// each stops with [`Error::Removed`](crate::Error::Removed) at its next wait or slow path
    /// (a consumer that finds nothing new, a producer that must wait for
    /// space or takes a slow claim), and waiting ones are woken for it.
    /// What they have mapped stays valid memory until they let it go;
    /// nothing they write after that reaches anyone. Prefer
    /// [`remove_in`](Self::remove_in), which refuses a stream in use.
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-remove-forced-{}", std::process::id()));
    /// use ipcress::{Error, StartAt, Stream, StreamOptions};
    /// let stream = Stream::create_in(&root, "busy", &StreamOptions::ring(1 << 16))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// Stream::remove_forced_in(&root, "busy")?;
    /// assert!(matches!(consumer.try_recv(), Err(Error::Removed { .. })));
    /// assert!(Stream::list_in(&root)?.is_empty());
    /// # std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn remove_forced_in(root: &Path, name: &str) -> Result<()> {
        let Some(dir) = dir_to_remove(root, name)? else {
            return Ok(());
        };
        // A meta file we cannot map is no stream anyone can have open.
        if let Ok(m) = MetaMap::open(&dir.join("meta")) {
            let r = m.region();
            r.u64_at(meta::REMOVED).store(1, SeqCst);
            // Fast claims compare the generation: they take the slow path,
            // which looks at `REMOVED`.
            r.u64_at(meta::EPOCH).fetch_add(1, SeqCst);
            for seq in [meta::DATA_SEQ, meta::SPACE_SEQ] {
                r.u32_at(seq).fetch_add(1, SeqCst);
                sys::futex_wake_all(r.u32_at(seq));
            }
        }
        delete_stream_dir(root, name)
    }
}
