//! Docker's default capability set.

use caps::Capability;

/// The capabilities a container process may hold: docker's default set. Everything else is
/// dropped from the bounding set, so not even a setuid binary can gain it back.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_is_dockers_mask() {
        // 0xa80425fb is what `grep CapBnd /proc/self/status` shows in a default docker container.
        let mask = DEFAULT_CAPABILITIES
            .iter()
            .fold(0u64, |m, c| m | c.bitmask());
        assert_eq!(mask, 0xa80425fb);
    }
}
