//! Feeds arbitrary bytes to the layer unpacker, in both modes. Any panic is a bug, and so is any
//! write outside the target, whatever the archive's names, links and whiteouts say.
//!
//! The target runs in a mount namespace of its own (so it needs root) where every mount is
//! read-only but two: a fresh tmpfs holding the target and nothing else, and libFuzzer's working
//! directory (corpus, artifacts). An escape therefore cannot harm the machine, and it is seen:
//! - a write elsewhere in the tmpfs leaves an entry beside the target;
//! - a write anywhere else fails with EROFS, which no archive can cause inside the tmpfs.
#![no_main]

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cairn_layer::{unpack_layer, UnpackMode};
use libfuzzer_sys::fuzz_target;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).expect("a path without NUL")
}

fn check(what: &str, rc: libc::c_int) {
    if rc != 0 {
        panic!(
            "{what}: {} (this fuzz target needs root: it makes a mount namespace)",
            std::io::Error::last_os_error()
        );
    }
}

fn set_readonly(path: &Path, readonly: bool, flags: libc::c_uint) {
    let attr = MountAttr {
        attr_set: if readonly { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: if readonly { 0 } else { MOUNT_ATTR_RDONLY },
        propagation: 0,
        userns_fd: 0,
    };
    let p = c(path);
    // SAFETY: mount_setattr reads `attr` (of the size passed) and the NUL-terminated path.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            p.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check("mount_setattr", rc as libc::c_int);
}

fn mount(src: &Path, dst: &Path, fstype: Option<&str>, flags: libc::c_ulong) {
    let (s, d) = (c(src), c(dst));
    let t = fstype.map(|t| CString::new(t).unwrap());
    // SAFETY: plain mount(2) with NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            t.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    check("mount", rc);
}

/// The tmpfs that holds the target, in this process's own read-only view of the machine.
fn jail() -> &'static PathBuf {
    static JAIL: OnceLock<PathBuf> = OnceLock::new();
    JAIL.get_or_init(|| {
        let jail = std::env::temp_dir().join(format!("cairn-fuzz-unpack-{}", std::process::id()));
        fs::create_dir_all(&jail).expect("the jail's mount point");
        let cwd = std::env::current_dir().expect("the working directory");
        // SAFETY: unshare(2) of the mount namespace only; the fuzzer is single-threaded here.
        check("unshare", unsafe { libc::unshare(libc::CLONE_NEWNS) });
        mount(
            Path::new("none"),
            Path::new("/"),
            None,
            libc::MS_REC | libc::MS_PRIVATE,
        );
        mount(Path::new("tmpfs"), &jail, Some("tmpfs"), 0);
        mount(&cwd, &cwd, None, libc::MS_BIND | libc::MS_REC);
        set_readonly(Path::new("/"), true, AT_RECURSIVE);
        set_readonly(&jail, false, 0);
        set_readonly(&cwd, false, AT_RECURSIVE);
        // The working directory still refers to the mount under the bind (now read-only): enter
        // it again, or libFuzzer's relative corpus paths could not be written.
        std::env::set_current_dir(&cwd).expect("the working directory again");
        // The premise of the EROFS check below: beside the jail, nothing can be written.
        let probe = jail.with_extension("probe");
        match fs::write(&probe, b"") {
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
            other => panic!("{} could be written: {other:?}", probe.display()),
        }
        jail
    })
}

/// Whether `e` or one of its sources is the EROFS of a write outside the jail, by its OS error
/// code.
fn read_only_write(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(libc::EROFS) {
                return true;
            }
        }
        cur = err.source();
    }
    // Not the message's text: an archive's own bytes end up in messages (a fuzzer soon wrote
    // "Read-only file system" into a header's checksum field).
    false
}

fuzz_target!(|data: &[u8]| {
    let jail = jail();
    let target = jail.join("target");
    for mode in [UnpackMode::Apply, UnpackMode::OverlayLower] {
        fs::create_dir(&target).expect("a fresh target");
        if let Err(e) = unpack_layer(data, &target, mode) {
            assert!(
                !read_only_write(&e),
                "{mode:?}: a write outside the target: {e}"
            );
        }
        let beside: Vec<_> = fs::read_dir(jail)
            .expect("the jail")
            .map(|e| e.expect("a jail entry").file_name())
            .filter(|n| n != "target")
            .collect();
        assert!(
            beside.is_empty(),
            "{mode:?}: written outside the target: {beside:?}"
        );
        fs::remove_dir_all(&target).expect("the target removed");
    }
});
