//! `cairn build --check` / `--check-error` and `cairn history --layers` on a real build.
//!
//! Root: builds run RUN steps in namespaces (CI runs as root). Needs busybox-static.

mod common;

use common::{base_busybox_tar, stderr, stdout, Cairn};

#[test]
fn build_check_passes_warns_and_fails_on_errors() {
    // A pinned tag: an unpinned base would be a second warning.
    let c = Cairn::new();
    c.import(base_busybox_tar(), "busybox:1", &[]);

    // Clean apart from a warning: exit 0, the warning shown; --check-error turns it into 1.
    c.write(
        "Dockerfile",
        "FROM busybox:1\nRUN echo hi > /hi\nUSER 1000\nCMD echo\n",
    );
    let out = c.build(&["--check", "-t", "ok:1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("JSONArgsRecommended") && err.contains("Check complete: 0 errors, 1 warning"),
        "{err}"
    );
    let out = c.build(&["--check-error"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // A private key left in a layer is an error: exit 1 even though the build succeeded.
    c.write(
        "id_rsa",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n",
    );
    c.write(
        "Dockerfile",
        "FROM busybox:1\nCOPY id_rsa /root/.ssh/id_rsa\nRUN rm /root/.ssh/id_rsa\nUSER 1000\n",
    );
    let out = c.build(&["--check", "-t", "leak:1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("SecretInLayer"), "{err}");
    // Without --check the same build succeeds.
    assert_eq!(c.build(&[]).status.code(), Some(0));
}

#[test]
fn history_layers_lists_each_layer_with_its_files() {
    let c = Cairn::with_busybox();
    c.write(
        "Dockerfile",
        "FROM busybox\nRUN head -c 50000 /dev/zero > /big && echo x > /small\nRUN rm /big\n",
    );
    c.ok_build(&["-t", "layers:1"]);
    let out = c.cairn(&["history", "--layers", "layers:1"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.starts_with("LAYER"), "{text}");
    assert!(text.contains("RUN /bin/sh -c head -c 50000"), "{text}");
    assert!(
        text.contains("/big") && text.contains("/bin/busybox"),
        "{text}"
    );
    assert!(text.contains("in 3 layers"), "{text}");
    // The 50 kB written then deleted count as wasted.
    assert!(!text.contains("; 0B wasted"), "{text}");
}
