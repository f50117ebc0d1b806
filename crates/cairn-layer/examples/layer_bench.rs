//! Throughput helpers for `bench/layer-throughput` (not a test):
//!
//! - `layer_bench floor FILE`: the machine's floor, sha256 + gzip (same crates, same level as the
//!   layer writer) of FILE's bytes, single-threaded, output discarded.
//! - `layer_bench tree DIR`: `write_layer(DiffSource::Tree(DIR), Gzip)` to a discarding writer.
//! - `layer_bench hash DIR`: the same, uncompressed: what a step's diffID costs.
//! - `layer_bench unpack BLOB DIR`: `unpack_layer(BLOB, DIR, OverlayLower)` (a snapshot).
//!
//! Each prints `MODE BYTES SECONDS MB/s` (MB = 10^6 bytes; BYTES = uncompressed bytes); `tree`
//! adds the compressed size of the layer.

use cairn_layer::hash::HashingWriter;
use cairn_layer::{write_layer_with_stats, Compression, DiffSource, WriteOptions};
use sha2::Digest as _;
use std::io::{Read, Write};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (mode, path) = match (args.get(1), args.get(2)) {
        (Some(m), Some(p)) => (m.as_str(), p.as_str()),
        _ => {
            return Err(
                "usage: layer_bench floor FILE | tree DIR | hash DIR | unpack BLOB DIR".into(),
            )
        }
    };
    let start = Instant::now();
    let mut compressed = None;
    let bytes = match mode {
        "floor" => {
            let mut f = std::fs::File::open(path)?;
            let mut h = sha2::Sha256::new();
            let mut gz =
                flate2::GzBuilder::new().write(std::io::sink(), flate2::Compression::default());
            let mut buf = vec![0u8; 256 * 1024];
            let mut n = 0u64;
            loop {
                let k = f.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
                gz.write_all(&buf[..k])?;
                n += k as u64;
            }
            gz.finish()?;
            std::hint::black_box(h.finalize());
            n
        }
        "tree" | "hash" => {
            let (desc, stats) = write_layer_with_stats(
                DiffSource::Tree(path.as_ref()),
                if mode == "tree" {
                    Compression::Gzip
                } else {
                    Compression::None
                },
                &WriteOptions::default(),
                HashingWriter::new(std::io::sink()),
            )?;
            compressed = Some(desc.size);
            stats.tar_size
        }
        "unpack" => {
            let dir = args.get(3).ok_or("unpack needs a target directory")?;
            std::fs::create_dir_all(dir)?;
            let f = std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(path)?);
            cairn_layer::unpack_layer(f, dir.as_ref(), cairn_layer::UnpackMode::OverlayLower)?
                .tar_size
        }
        other => return Err(format!("unknown mode {other}").into()),
    };
    let secs = start.elapsed().as_secs_f64();
    match compressed {
        Some(c) => println!(
            "{mode} {bytes} {secs:.3} {:.1} {c}",
            bytes as f64 / 1e6 / secs
        ),
        None => println!("{mode} {bytes} {secs:.3} {:.1}", bytes as f64 / 1e6 / secs),
    }
    Ok(())
}
