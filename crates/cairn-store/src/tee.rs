//! Reading one stream twice at once: the importer reads the caller's tar while a second thread
//! unpacks the same bytes into the layer's snapshot, so an import costs one pass over the input
//! and both cores work (hash + compress on one, unpack on the other).

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender};

/// Passes through what it reads, and sends a copy of every chunk to the other reader.
pub(crate) struct TeeReader<R> {
    inner: R,
    tx: Option<SyncSender<Vec<u8>>>,
}

impl<R: Read> TeeReader<R> {
    pub(crate) fn new(inner: R, tx: SyncSender<Vec<u8>>) -> Self {
        TeeReader {
            inner,
            tx: Some(tx),
        }
    }

    /// Sends the rest of the input to the other reader (the importer may stop before the end:
    /// tar padding, a compressor's trailer) and closes the channel.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(())
    }
}

impl<R: Read> Read for TeeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            if let Some(tx) = &self.tx {
                // The other side only hangs up if its thread died: importing goes on without it.
                if tx.send(buf[..n].to_vec()).is_err() {
                    self.tx = None;
                }
            }
        }
        Ok(n)
    }
}

/// The receiving end, as a reader; EOF when the sender is gone.
pub(crate) struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    pub(crate) fn new(rx: Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        }
    }

    /// Receives and drops everything left, so the sender never blocks on a reader that gave up.
    pub(crate) fn drain(&self) {
        while self.rx.recv().is_ok() {}
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_readers_see_every_byte() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let got = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let mut r = ChannelReader::new(rx);
                let mut v = Vec::new();
                r.read_to_end(&mut v).unwrap();
                v
            });
            let mut tee = TeeReader::new(&data[..], tx);
            let mut first = vec![0u8; 1000];
            tee.read_exact(&mut first).unwrap();
            assert_eq!(first, data[..1000]);
            tee.finish().unwrap();
            h.join().unwrap()
        });
        assert_eq!(got, data);
    }
}
