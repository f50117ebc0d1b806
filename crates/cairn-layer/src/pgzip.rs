//! Parallel, deterministic gzip (pigz's scheme) for layer blobs.
//!
//! The uncompressed stream is cut into fixed [`CHUNK`]-sized chunks (a constant: never derived
//! from the number of threads or from how the caller splits its `write` calls). Each chunk is
//! raw-deflated at level 6 by a fresh deflate stream primed with the last 32 KiB of input before
//! it as a preset dictionary, and ends with a sync flush (an empty stored block, which leaves
//! the stream byte-aligned and not final) — except the last chunk, which ends with `Finish`.
//! Concatenated behind the gzip header `GzBuilder` writes (mtime 0, no name, XFL 0, OS 255) and
//! followed by the CRC32 and ISIZE of the whole input, the chunks form ONE ordinary gzip member
//! that any inflater (zlib, `gzip -d`, flate2's `GzDecoder`) decodes. Each chunk's bytes depend
//! only on the chunk and the 32 KiB before it, so the blob is the same whatever the thread count:
//! images stay bit-for-bit reproducible. Compared with one single deflate stream it costs ~0.1–0.5 %
//! in size (Huffman tables and the lazy-match state restart every chunk).
//!
//! Inputs of at most one chunk are compressed on the calling thread when `finish` is called (no
//! thread start-up for small layers); worker threads (`available_parallelism()`, at most
//! [`MAX_WORKERS`]) start at the first full chunk. At most [`IN_FLIGHT_PER_WORKER`] chunks per
//! worker are queued or being compressed, so memory stays at a few MiB. The inner writer is only
//! ever used on the calling thread (no `Send` bound); its errors are returned as they are.
//!
//! Chunks are reused across layers: with a [`ChunkCache`], each chunk's key (a sha256 of the
//! format, the dictionary and the input) is looked up first, and a hit's bytes are written
//! instead of compressing again. Since a chunk's bytes are a function of its key, the blob is
//! the same with or without the cache. The writer reports where each chunk landed and a check
//! binding its key to its compressed bytes ([`ChunkRecord`], [`crate::chunk_check`]: CRC-32 of
//! key ‖ bytes), for the store to offer them to later layers: a rebuilt `COPY . .` whose big
//! files did not change compresses only the chunks that did. A hit is used only if its bytes
//! still match the check recorded with them, and a chunk that is not the last ends with the
//! sync flush's empty stored block (`00 00 ff ff`); see [`usable`] for what that guarantees.
//! Until 2026-11 a hit was inflated and compared with the input instead: exact, but ~2.6 ms of
//! CPU per MiB of input (a 200 MiB layer whose chunks were all cached: 0.77 s of CPU, 0.47 s
//! with the check, which costs ~0.16 ms per chunk).
//!
//! Why hand-written rather than the `gzp` crate (evaluated 2026-11): gzp's flate2 features pick
//! miniz_oxide, zlib or zlib-ng — there is no zlib-rs one, and enabling any of them unifies
//! flate2's features for the whole workspace, switching every other user of flate2 (gunzip of
//! pulled layers, the zlib-rs deflate this module relies on) to another backend; it also brings
//! flume, core_affinity, num_cpus and (by default) libdeflater, and always spawns its threads,
//! even for tiny layers. What is needed here is ~200 lines over flate2's own `Compress`
//! (`set_dictionary` is available with the zlib-rs backend) and `Crc` (zlib-rs' crc32 with
//! `combine`), so no new dependency.

use crate::{chunk_check, CachedChunk, ChunkCache, ChunkKey, ChunkRecord};
use flate2::{Compress, Crc, FlushCompress, Status};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

/// Uncompressed bytes per independently compressed chunk. Part of the output format: changing it
/// changes every gzip layer's digest.
pub(crate) const CHUNK: usize = 1 << 20;
/// The deflate window: how much preceding input primes each chunk.
const DICT: usize = 32 * 1024;
/// Upper bound on compression threads.
const MAX_WORKERS: usize = 4;
/// Chunks queued or in compression per worker before `write` waits for the oldest.
const IN_FLIGHT_PER_WORKER: usize = 2;
/// Deflate level: flate2's default, what the single-stream writer used.
const LEVEL: u32 = 6;

/// The gzip header flate2's `GzBuilder::new()` writes at the default level: magic, CM=8, no
/// flags, mtime 0, XFL 0, OS 255 (unknown).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// A gzip writer compressing [`CHUNK`]s on worker threads; see the module documentation.
///
/// Dropping it without [`ParGzWriter::finish`] stops and joins its threads and leaves the output
/// truncated (no trailer is written).
pub(crate) struct ParGzWriter<W: Write> {
    inner: Option<W>,
    /// Input of the chunk being filled (at most `chunk` bytes; a full chunk is only handed off
    /// once more input arrives, since the last chunk is compressed differently).
    buf: Vec<u8>,
    chunk: usize,
    /// The last (up to) 32 KiB of input before `buf`.
    dict: Vec<u8>,
    /// Thread budget; at most 1 means everything is compressed on the calling thread.
    workers: usize,
    pool: Option<Pool>,
    /// Sequence number of the next chunk handed off.
    next_seq: u64,
    /// Sequence number of the next chunk to write out.
    next_out: u64,
    /// Compressed chunks that arrived before an earlier one.
    ready: BTreeMap<u64, Compressed>,
    /// Emptied input buffers, for reuse.
    spare: Vec<Vec<u8>>,
    crc: Crc,
    total_in: u64,
    header_done: bool,
    /// Set after any error: the output is then unusable and every later call fails.
    poisoned: bool,
    /// Earlier layers' chunks; with it, chunks get keys and are recorded.
    cache: Option<Arc<dyn ChunkCache>>,
    /// Compressed bytes written so far (gzip header included): where the next chunk starts.
    out_bytes: u64,
    /// Where each chunk went, when there is a cache.
    records: Vec<ChunkRecord>,
    /// Chunks taken from the cache.
    reused: u64,
}

struct Compressed {
    data: io::Result<Vec<u8>>,
    crc: Crc,
    /// The chunk's key and [`chunk_check`] when there is a cache, and whether its bytes came
    /// from it.
    key: Option<(ChunkKey, u32)>,
    reused: bool,
    /// The (emptied) input buffer, back for reuse.
    input: Vec<u8>,
}

struct Job {
    seq: u64,
    input: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
    cache: Option<Arc<dyn ChunkCache>>,
}

struct Pool {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<(u64, Compressed)>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the job queue ends each worker after its current chunk; results still sent go
        // to `done`, which lives until the joins are over, so no worker ever blocks.
        self.jobs = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl<W: Write> ParGzWriter<W> {
    /// A writer using `available_parallelism()` threads, at most [`MAX_WORKERS`].
    pub(crate) fn new(inner: W) -> Self {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_workers(inner, n.min(MAX_WORKERS))
    }

    /// A writer using `workers` threads (0 or 1: all on the calling thread). The output does not
    /// depend on `workers`.
    pub(crate) fn with_workers(inner: W, workers: usize) -> Self {
        Self::with_chunk(inner, workers, CHUNK)
    }

    fn with_chunk(inner: W, workers: usize, chunk: usize) -> Self {
        ParGzWriter {
            inner: Some(inner),
            buf: Vec::new(),
            chunk,
            dict: Vec::new(),
            workers,
            pool: None,
            next_seq: 0,
            next_out: 0,
            ready: BTreeMap::new(),
            spare: Vec::new(),
            crc: Crc::new(),
            total_in: 0,
            header_done: false,
            poisoned: false,
            cache: None,
            out_bytes: 0,
            records: Vec::new(),
            reused: 0,
        }
    }

    /// Looks chunks up in `cache` before compressing them, and records where each one lands
    /// (see [`ParGzWriter::finish_with_records`]). The output bytes do not change.
    pub(crate) fn with_cache(mut self, cache: Arc<dyn ChunkCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// [`ParGzWriter::finish`], also giving where each chunk is in the output (empty without a
    /// cache) and how many were taken from the cache.
    pub(crate) fn finish_with_records(mut self) -> io::Result<(W, Vec<ChunkRecord>, u64)> {
        self.check()?;
        let r = self.finish_inner();
        if r.is_err() {
            self.poisoned = true;
        }
        r?;
        self.pool = None; // joins the workers
        let records = std::mem::take(&mut self.records);
        let inner = self
            .inner
            .take()
            .expect("inner writer present until finish");
        Ok((inner, records, self.reused))
    }

    /// Compresses what is left, writes the trailer and returns the inner writer. Worker threads
    /// are joined before it returns.
    #[cfg(test)]
    pub(crate) fn finish(self) -> io::Result<W> {
        Ok(self.finish_with_records()?.0)
    }

    fn finish_inner(&mut self) -> io::Result<()> {
        self.hand_off(true)?;
        while self.next_out < self.next_seq {
            self.wait_one()?;
        }
        self.write_header()?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&(self.total_in as u32).to_le_bytes());
        self.inner_mut().write_all(&trailer)
    }

    fn check(&self) -> io::Result<()> {
        if self.poisoned {
            Err(io::Error::other(
                "gzip writer unusable after an earlier error",
            ))
        } else {
            Ok(())
        }
    }

    fn inner_mut(&mut self) -> &mut W {
        self.inner
            .as_mut()
            .expect("inner writer present until finish")
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_done {
            self.inner_mut().write_all(&HEADER)?;
            self.header_done = true;
            self.out_bytes += HEADER.len() as u64;
        }
        Ok(())
    }

    /// Hands the buffered input off as the next chunk (the final one if `last`): to the pool, or
    /// compressed right here when there is no pool and either the thread budget is one or it is
    /// the last chunk (a stream of at most one chunk never starts threads).
    fn hand_off(&mut self, last: bool) -> io::Result<()> {
        let fresh = self.spare.pop().unwrap_or_default();
        let input = std::mem::replace(&mut self.buf, fresh);
        let dict = self.dict.clone();
        if input.len() >= DICT {
            self.dict.clear();
            self.dict.extend_from_slice(&input[input.len() - DICT..]);
        } else {
            self.dict.extend_from_slice(&input);
            let excess = self.dict.len().saturating_sub(DICT);
            self.dict.drain(..excess);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let job = Job {
            seq,
            input,
            dict,
            last,
            cache: self.cache.clone(),
        };
        if self.pool.is_none() && (self.workers <= 1 || last) {
            return self.accept(seq, compress_job(job));
        }
        if self.pool.is_none() {
            self.pool = start_pool(self.workers);
        }
        let Some(pool) = &self.pool else {
            // No thread could be started: compress here (same bytes).
            self.workers = 1;
            return self.accept(seq, compress_job(job));
        };
        let limit = (pool.handles.len() * IN_FLIGHT_PER_WORKER) as u64;
        let sent = pool.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if !sent {
            return Err(io::Error::other("gzip worker threads are gone"));
        }
        // Write out what is already done; wait while too many chunks are outstanding.
        loop {
            let pool = self.pool.as_ref().expect("pool started above");
            match pool.done.try_recv() {
                Ok((seq, done)) => self.accept(seq, done)?,
                Err(_) if self.next_seq - self.next_out >= limit => self.wait_one()?,
                Err(_) => return Ok(()),
            }
        }
    }

    /// Blocks until one more compressed chunk arrives from the pool.
    fn wait_one(&mut self) -> io::Result<()> {
        let pool = self
            .pool
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip: chunks outstanding without workers"))?;
        let (seq, done) = pool
            .done
            .recv()
            .map_err(|_| io::Error::other("gzip worker threads are gone"))?;
        self.accept(seq, done)
    }

    /// Takes a compressed chunk and writes out every chunk that is now next in order.
    fn accept(&mut self, seq: u64, done: Compressed) -> io::Result<()> {
        self.ready.insert(seq, done);
        while let Some(c) = self.ready.remove(&self.next_out) {
            self.next_out += 1;
            let mut input = c.input;
            input.clear();
            if self.spare.len() < 2 {
                self.spare.push(input);
            }
            let data = c.data?;
            self.write_header()?;
            self.inner_mut().write_all(&data)?;
            self.crc.combine(&c.crc);
            if let Some((key, check)) = c.key {
                self.records.push(ChunkRecord {
                    key,
                    offset: self.out_bytes,
                    len: data.len() as u64,
                    check,
                });
            }
            self.reused += c.reused as u64;
            self.out_bytes += data.len() as u64;
        }
        Ok(())
    }
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check()?;
        if data.is_empty() {
            return Ok(0);
        }
        if self.buf.len() >= self.chunk {
            // More input follows a full chunk, so that chunk is not the last one.
            if let Err(e) = self.hand_off(false) {
                self.poisoned = true;
                return Err(e);
            }
        }
        if self.buf.capacity() < self.chunk {
            self.buf.reserve_exact(self.chunk - self.buf.len());
        }
        let n = data.len().min(self.chunk - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.total_in += n as u64;
        Ok(n)
    }

    /// Writes out the chunks already compressed and flushes the inner writer. Buffered input of
    /// an unfinished chunk stays buffered: flushing must not change the output bytes.
    fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        while let Some(Ok((seq, done))) = self.pool.as_ref().map(|p| p.done.try_recv()) {
            if let Err(e) = self.accept(seq, done) {
                self.poisoned = true;
                return Err(e);
            }
        }
        self.inner_mut().flush()
    }
}

/// Starts up to `workers` threads; `None` if not even one could be started.
fn start_pool(workers: usize) -> Option<Pool> {
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    let (done_tx, done_rx) = mpsc::channel();
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let mut handles = Vec::with_capacity(workers);
    for i in 0..workers {
        let rx = Arc::clone(&jobs_rx);
        let tx = done_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("cairn-gzip-{i}"))
            .spawn(move || worker(&rx, &tx));
        match spawned {
            Ok(h) => handles.push(h),
            Err(_) => break,
        }
    }
    if handles.is_empty() {
        return None;
    }
    Some(Pool {
        jobs: Some(jobs_tx),
        done: done_rx,
        handles,
    })
}

fn worker(jobs: &Mutex<mpsc::Receiver<Job>>, done: &mpsc::Sender<(u64, Compressed)>) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok(job) = job else { return };
        let seq = job.seq;
        if done.send((seq, compress_job(job))).is_err() {
            return;
        }
    }
}

/// Compresses one chunk, or takes it from the cache. Never panics: a panic inside the deflater
/// becomes an error.
fn compress_job(job: Job) -> Compressed {
    let mut crc = Crc::new();
    crc.update(&job.input);
    let key = job
        .cache
        .as_ref()
        .map(|_| chunk_key(&job.input, &job.dict, job.last));
    let cached = match (&job.cache, &key) {
        (Some(cache), Some(key)) => cache.get(key).filter(|hit| usable(key, hit, job.last)),
        _ => None,
    };
    let reused = cached.is_some();
    let (data, check) = match cached {
        Some(hit) => (Ok(hit.bytes), Some(hit.check)),
        None => {
            let data = catch_unwind(AssertUnwindSafe(|| {
                deflate_chunk(&job.input, &job.dict, job.last)
            }))
            .unwrap_or_else(|_| Err(io::Error::other("gzip: deflate panicked")));
            let check = match (&key, &data) {
                (Some(key), Ok(bytes)) => Some(chunk_check(key, bytes)),
                _ => None,
            };
            (data, check)
        }
    };
    Compressed {
        data,
        crc,
        key: key.zip(check),
        reused,
        input: job.input,
    }
}

/// The empty stored block a sync flush ends with: every chunk but a stream's last ends so.
const SYNC_MARK: [u8; 4] = [0, 0, 0xff, 0xff];

/// Whether a cache hit may be written in place of compressing `key`'s chunk again (`last`: the
/// stream's last chunk, ended by the final block instead of a sync flush).
///
/// The hit's bytes were written by this module for `key` and recorded with their check, so
/// what can go wrong is between then and now: the record (a torn or garbage index file, a
/// wrong offset or length, another chunk's check) or the bytes (bit rot, the region rewritten).
/// - CRC-32 of key ‖ bytes must equal the recorded check (32 bits). Bytes altered since: every
///   burst of at most 32 bits and every 1- or 2-bit error is caught (CRC-32's Hamming distance
///   is 3 up to 2^32 bits), anything else passes with probability 2^-32. The key is hashed
///   first, so another chunk's genuine bytes with their genuine check are refused too.
/// - A chunk that is not the last must end with [`SYNC_MARK`]: a span that does not end where
///   a chunk ends (wrong offset or length) passes that with probability ~2^-32 on its own; a
///   span that is exactly another chunk is the case the key in the CRC covers.
/// - The cache checks its own records before answering (the store's index files have a magic
///   header and a 64-bit truncated sha256 per record, binding it to its blob), so a torn or
///   garbage record gets here with probability 2^-64, and must then pass the CRC too.
///
/// Together: at least 64 bits against a damaged index, 32 against a sound record whose bytes
/// changed (plus the mark if the change misplaces the span), with the burst and few-bit
/// guarantees above. Inflating the hit was exact but cost ~16 times more (measured when
/// zlib-rs still ran its table-driven crc32, ~2 GB/s; with flate2's `runtime_detection` it uses
/// pclmulqdq). The guarantee lives here, not in the cache: it
/// holds for any [`ChunkCache`] handing back the check it recorded (tested with a lying cache,
/// damaged bytes and a tampered index: the blob is the one compressing again gives).
fn usable(key: &ChunkKey, hit: &CachedChunk, last: bool) -> bool {
    (last || hit.bytes.ends_with(&SYNC_MARK)) && chunk_check(key, &hit.bytes) == hit.check
}

/// What a chunk's compressed bytes are a function of: this format (chunk size, level, how it
/// ends), its dictionary and its input.
fn chunk_key(input: &[u8], dict: &[u8], last: bool) -> ChunkKey {
    let mut h = Sha256::new();
    h.update(b"cairn-pgzip-chunk-v1\0");
    h.update((CHUNK as u64).to_le_bytes());
    h.update(LEVEL.to_le_bytes());
    h.update([last as u8]);
    h.update((dict.len() as u64).to_le_bytes());
    h.update(dict);
    h.update((input.len() as u64).to_le_bytes());
    h.update(input);
    h.finalize().into()
}

/// Raw deflate of `input` primed with `dict`, ended with a sync flush, or with the end of the
/// stream if `last`.
///
/// A fresh `Compress` every time, on purpose: with zlib-rs 0.6, `reset()` + `set_dictionary`
/// does not always give the bytes of a new stream (state from earlier chunks leaks into match
/// finding), which would make the output depend on which worker compressed what before. The
/// allocation is ~0.3 MB per 1 MiB chunk: noise next to the deflate itself.
fn deflate_chunk(input: &[u8], dict: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(LEVEL), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(input.len() / 2 + 4096);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == input.len();
        // Room left in `out` means the flush completed; a full `out` may hide pending output.
        let done = match status {
            Status::StreamEnd => true,
            _ => !last && all_in && out.len() < out.capacity(),
        };
        if done {
            return Ok(out);
        }
        out.reserve(out.capacity().max(64 * 1024));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Read;

    /// Deterministic test data: runs of text-like (compressible) bytes and of noise.
    pub(super) fn sample(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let words: [&[u8]; 8] = [
            b"layer ",
            b"cairn ",
            b"usr/lib/",
            b"\0\0\0\0",
            b"0000644 ",
            b"deflate ",
            b"\n",
            b"ustar  ",
        ];
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            let r = next();
            if r % 16 == 0 {
                for _ in 0..(r >> 8) % 512 {
                    v.push(next() as u8);
                }
            } else {
                v.extend_from_slice(words[(r >> 4) as usize % words.len()]);
            }
        }
        v.truncate(len);
        v
    }

    fn compress(data: &[u8], workers: usize, chunk: usize, split: &[usize]) -> Vec<u8> {
        let mut w = ParGzWriter::with_chunk(Vec::new(), workers, chunk);
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let n = if split.is_empty() {
                rest.len()
            } else {
                split[i % split.len()].clamp(1, rest.len())
            };
            i += 1;
            w.write_all(&rest[..n]).unwrap();
            if i % 7 == 0 {
                w.flush().unwrap();
            }
            rest = &rest[n..];
        }
        w.finish().unwrap()
    }

    /// The format, spelled out with a fresh deflate stream per chunk.
    fn reference(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = HEADER.to_vec();
        let mut starts: Vec<usize> = (0..data.len()).step_by(chunk).collect();
        if starts.is_empty() {
            starts.push(0);
        }
        for (i, &s) in starts.iter().enumerate() {
            let end = (s + chunk).min(data.len());
            let last = i + 1 == starts.len();
            let dict = &data[s.saturating_sub(DICT)..s];
            out.extend(deflate_chunk(&data[s..end], dict, last).unwrap());
        }
        let mut crc = Crc::new();
        crc.update(data);
        out.extend(crc.sum().to_le_bytes());
        out.extend((data.len() as u32).to_le_bytes());
        out
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut v)
            .unwrap();
        v
    }

    const SIZES: [usize; 9] = [
        0,
        1,
        100,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        2 * CHUNK,
        3 * CHUNK,
        3 * CHUNK + 12_345,
    ];

    #[test]
    fn header_is_the_one_gzbuilder_writes() {
        let mut e = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::default());
        e.write_all(b"x").unwrap();
        let single = e.finish().unwrap();
        assert_eq!(single[..10], HEADER);
        assert_eq!(compress(b"x", 1, CHUNK, &[])[..10], HEADER);
    }

    #[test]
    fn round_trips_and_matches_the_reference_format() {
        for &len in &SIZES {
            let data = sample(len, len as u64);
            let gz = compress(&data, 4, CHUNK, &[]);
            assert_eq!(gz, reference(&data, CHUNK), "len {len}");
            assert_eq!(gunzip(&gz), data, "GzDecoder, len {len}");
            let mut v = Vec::new();
            flate2::read::MultiGzDecoder::new(&gz[..])
                .read_to_end(&mut v)
                .unwrap();
            assert_eq!(v, data, "MultiGzDecoder, len {len}");
        }
    }

    #[test]
    fn same_bytes_for_any_worker_count_and_write_split() {
        for &len in &SIZES {
            let data = sample(len, 7 + len as u64);
            let one = compress(&data, 1, CHUNK, &[]);
            for workers in [0, 2, 3, 4] {
                assert_eq!(
                    compress(&data, workers, CHUNK, &[]),
                    one,
                    "len {len} w {workers}"
                );
            }
            assert_eq!(
                compress(&data, 2, CHUNK, &[1, 4096, 65_537, 1 << 20, 7]),
                one
            );
            assert_eq!(compress(&data, 4, CHUNK, &[3 * CHUNK / 2]), one);
        }
    }

    #[test]
    fn system_gzip_decodes_it() {
        let data = sample(3 * CHUNK + 999, 42);
        let gz = compress(&data, 2, CHUNK, &[]);
        for cmd in [&["gzip", "-dc"][..], &["zcat"][..], &["gzip", "-t"][..]] {
            let mut child = std::process::Command::new(cmd[0])
                .args(&cmd[1..])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{}: {e}", cmd[0]));
            let mut stdin = child.stdin.take().unwrap();
            let input = gz.clone();
            let feeder = std::thread::spawn(move || stdin.write_all(&input));
            let out = child.wait_with_output().unwrap();
            feeder.join().unwrap().unwrap();
            assert!(out.status.success(), "{cmd:?}: {:?}", out.status);
            if cmd[1..] != ["-t"] {
                assert!(out.stdout == data, "{cmd:?} decoded something else");
            }
        }
    }

    #[test]
    fn size_within_one_percent_of_a_single_stream() {
        let data = sample(6 * CHUNK + 5, 3);
        let par = compress(&data, 2, CHUNK, &[]).len() as f64;
        let mut e = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::default());
        e.write_all(&data).unwrap();
        let single = e.finish().unwrap().len() as f64;
        assert!(par / single < 1.01, "parallel {par} vs single {single}");
    }

    /// Chunks by key, as the store keeps them (from the records of blobs written before).
    #[derive(Default)]
    struct MapCache(Mutex<std::collections::HashMap<ChunkKey, CachedChunk>>);

    impl ChunkCache for MapCache {
        fn get(&self, key: &ChunkKey) -> Option<CachedChunk> {
            self.0.lock().unwrap().get(key).cloned()
        }
    }

    impl MapCache {
        fn learn(&self, blob: &[u8], records: &[ChunkRecord]) {
            for r in records {
                let bytes = blob[r.offset as usize..(r.offset + r.len) as usize].to_vec();
                assert_eq!(chunk_check(&r.key, &bytes), r.check);
                let hit = CachedChunk {
                    bytes,
                    check: r.check,
                };
                self.0.lock().unwrap().insert(r.key, hit);
            }
        }
    }

    fn compress_with(
        data: &[u8],
        workers: usize,
        cache: Arc<dyn ChunkCache>,
    ) -> (Vec<u8>, Vec<ChunkRecord>, u64) {
        let mut w = ParGzWriter::with_workers(Vec::new(), workers).with_cache(cache);
        w.write_all(data).unwrap();
        w.finish_with_records().unwrap()
    }

    #[test]
    fn reused_chunks_give_the_same_blob_as_compressing_again() {
        let cache = Arc::new(MapCache::default());
        let first = sample(5 * CHUNK + 1234, 7);
        let (blob, records, reused) = compress_with(&first, 2, cache.clone());
        assert_eq!(reused, 0);
        assert_eq!(blob, compress(&first, 2, CHUNK, &[]));
        assert_eq!(records.len(), 6);
        assert_eq!(records[0].offset, HEADER.len() as u64);
        cache.learn(&blob, &records);
        // The same stream with a change in its fourth chunk: the first three chunks are reused;
        // so is the fifth (same input, same 32 KiB before it), not the last (one byte more).
        let mut second = first.clone();
        second[3 * CHUNK + 10] ^= 0xff;
        second.push(b'!');
        for workers in [1, 3] {
            let (blob2, records2, reused2) = compress_with(&second, workers, cache.clone());
            assert_eq!(blob2, compress(&second, 1, CHUNK, &[]), "{workers} workers");
            assert_eq!(reused2, 4, "{workers} workers");
            assert_eq!(gunzip(&blob2), second);
            assert_eq!(records2.len(), 6);
        }
    }

    #[test]
    fn a_wrong_cached_chunk_is_never_used() {
        /// Answers every key with the same chunk.
        struct Liar(CachedChunk);
        impl ChunkCache for Liar {
            fn get(&self, _: &ChunkKey) -> Option<CachedChunk> {
                Some(self.0.clone())
            }
        }
        let data = sample(3 * CHUNK + 99, 3);
        let want = compress(&data, 2, CHUNK, &[]);
        let other = sample(3 * CHUNK + 99, 4);
        let (other_blob, other_records, _) =
            compress_with(&other, 2, Arc::new(MapCache::default()));
        let bytes_of = |blob: &[u8], r: &ChunkRecord| {
            blob[r.offset as usize..(r.offset + r.len) as usize].to_vec()
        };
        // A real chunk of another stream with its real check (the key is part of the check), a
        // truncated one, garbage, nothing at all; each with its own check, with a check
        // computed over the bytes and the key of another chunk, and with a zero one.
        let r = other_records[1];
        let real = bytes_of(&other_blob, &r);
        for (i, bytes) in [
            real.clone(),
            real[..real.len() / 2].to_vec(),
            vec![0xff; 300],
            SYNC_MARK.to_vec(),
            Vec::new(),
        ]
        .into_iter()
        .enumerate()
        {
            for check in [r.check, chunk_check(&r.key, &bytes), 0] {
                let lie = CachedChunk {
                    bytes: bytes.clone(),
                    check,
                };
                let (blob, _, reused) = compress_with(&data, 2, Arc::new(Liar(lie)));
                assert_eq!(reused, 0, "lie {i}");
                assert_eq!(blob, want, "lie {i}");
            }
        }
    }

    #[test]
    fn damaged_bytes_or_a_wrong_check_are_refused() {
        let data = sample(5 * CHUNK + 77, 11);
        let cache = Arc::new(MapCache::default());
        let (blob, records, _) = compress_with(&data, 2, cache.clone());
        cache.learn(&blob, &records);
        assert_eq!(compress_with(&data, 2, cache.clone()).2, 6, "all reused");
        // Each chunk but the last damaged a different way: a flipped bit, a byte changed, a
        // span shifted by one byte, a check off by one, the first chunk's bytes and check.
        let mut map = cache.0.lock().unwrap().clone();
        let keys: Vec<ChunkKey> = records.iter().map(|r| r.key).collect();
        let first = map[&keys[0]].clone();
        map.get_mut(&keys[0]).unwrap().bytes[100] ^= 0x10;
        let b = &mut map.get_mut(&keys[1]).unwrap().bytes;
        let n = b.len() / 2;
        b[n] = b[n].wrapping_add(1);
        map.get_mut(&keys[2]).unwrap().bytes = {
            let r = records[2];
            blob[r.offset as usize + 1..(r.offset + r.len) as usize + 1].to_vec()
        };
        map.get_mut(&keys[3]).unwrap().check ^= 1;
        *map.get_mut(&keys[4]).unwrap() = first;
        let damaged = Arc::new(MapCache(Mutex::new(map)));
        let (blob2, records2, reused) = compress_with(&data, 2, damaged);
        assert_eq!(reused, 1, "only the intact last chunk");
        assert_eq!(blob2, blob);
        assert_eq!(records2, records);
    }

    #[test]
    fn small_input_starts_no_threads() {
        let mut w = ParGzWriter::with_workers(Vec::new(), 4);
        w.write_all(&sample(CHUNK, 1)).unwrap();
        assert!(w.pool.is_none());
        let w2 = {
            let mut w2 = ParGzWriter::with_workers(Vec::new(), 4);
            w2.write_all(&sample(CHUNK + 1, 1)).unwrap();
            w2
        };
        assert!(w2.pool.is_some());
        w.finish().unwrap();
        w2.finish().unwrap();
    }

    /// Accepts `limit` bytes, then fails.
    struct Failing {
        limit: usize,
        written: usize,
    }
    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.written >= self.limit {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            let n = buf.len().min(self.limit - self.written);
            self.written += n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn inner_writer_errors_are_returned() {
        let data = sample(4 * CHUNK, 9);
        for workers in [1, 2, 4] {
            for limit in [0, 5, 10, 100_000, 1_000_000] {
                let mut w = ParGzWriter::with_workers(Failing { limit, written: 0 }, workers);
                let r = w.write_all(&data).and_then(|()| w.finish().map(|_| ()));
                let e = r.expect_err("an inner error must surface");
                assert_eq!(
                    e.kind(),
                    io::ErrorKind::StorageFull,
                    "w {workers} l {limit}"
                );
            }
            // The error may surface at a later call (a chunk is written once compressed), but
            // once one call failed every later one fails: no corrupt stream is produced.
            let mut w = ParGzWriter::with_workers(
                Failing {
                    limit: 0,
                    written: 0,
                },
                workers,
            );
            let first = w.write_all(&data);
            let second = w.write_all(b"more");
            let end = w.finish().map(|_| ());
            assert!(end.is_err());
            if first.is_err() {
                assert!(second.is_err());
            }
        }
    }

    #[test]
    fn drop_without_finish_joins_quietly() {
        for workers in [1, 2, 4] {
            let mut w = ParGzWriter::with_workers(Vec::new(), workers);
            w.write_all(&sample(5 * CHUNK + 3, 5)).unwrap();
            drop(w);
        }
        let w = ParGzWriter::with_workers(Vec::new(), 4);
        drop(w);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Small chunks (many boundaries, chunks shorter than the 32 KiB dictionary) and random
        /// write splits: the bytes match the reference whatever the worker count.
        #[test]
        fn deterministic_for_any_split(
            len in 0usize..300_000,
            seed in any::<u64>(),
            chunk in prop::sample::select(vec![512usize, 4096, 20_000, 65_536, 100_000]),
            split in prop::collection::vec(1usize..150_000, 1..8),
            workers in 0usize..5,
        ) {
            let data = sample(len, seed);
            let want = reference(&data, chunk);
            let got = compress(&data, workers, chunk, &split);
            prop_assert!(got == want, "len {} chunk {} workers {}", len, chunk, workers);
            prop_assert!(gunzip(&got) == data);
        }
    }
}
