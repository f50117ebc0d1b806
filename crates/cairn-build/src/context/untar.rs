//! Extraction of a context sent as a tar: the same safe unpacker as ADD, confined to the
//! scratch directory.

use std::io::Read;
use std::path::Path;

use crate::copy::CopyStats;

/// Unpacks the decompressed tar `stream` into `scratch`; files belong to the process (owners do
/// not matter in a context: COPY makes them root's).
pub(crate) fn extract(stream: impl Read, scratch: &Path) -> Result<(), String> {
    let mut stats = CopyStats::default();
    crate::copy::archive::unpack(
        stream,
        scratch,
        scratch,
        crate::copy::archive::Owner::Process,
        &mut stats,
    )
}
