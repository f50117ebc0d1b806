//! Extraction of a context sent as a tar: the same safe unpacker as ADD, confined to the
//! scratch directory.

use std::io::Read;
use std::path::Path;

use crate::copy::CopyStats;

/// Unpacks the decompressed tar `stream` into `scratch`, keeping the archive's owners.
pub(crate) fn extract(stream: impl Read, scratch: &Path) -> Result<(), String> {
    let mut stats = CopyStats::default();
    crate::copy::archive::unpack(stream, scratch, scratch, None, &mut stats)
}
