//! Repository digests (what a registry served an image as) and the cache index export.

use cairn_store::Store;
use serde_json::json;

fn image(store: &Store, tag: &str, marker: &str) -> cairn_store::ImageRecord {
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"m": marker}},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    store
        .commit_image_json(&config, &[], &[tag.to_string()])
        .unwrap()
}

#[test]
fn repo_digests_resolve_list_and_go_with_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let img = image(&store, "127.0.0.1:5000/app:1", "a");
    let other = image(&store, "other:1", "b");
    let index = format!("sha256:{}", "ab".repeat(32));
    assert!(store
        .resolve(&format!("127.0.0.1:5000/app@{index}"))
        .unwrap()
        .is_none());

    store
        .add_repo_digest(&img.id, &format!("127.0.0.1:5000/app:1@{index}"))
        .unwrap();
    let found = store
        .resolve(&format!("127.0.0.1:5000/app@{index}"))
        .unwrap()
        .unwrap();
    assert_eq!(found.id, img.id);
    assert_eq!(found.repo_digests, [format!("127.0.0.1:5000/app@{index}")]);
    // The digest belongs to that repository only.
    assert!(store
        .resolve(&format!("127.0.0.1:5000/elsewhere@{index}"))
        .unwrap()
        .is_none());
    assert!(store.get("other:1").unwrap().repo_digests.is_empty());
    assert!(store
        .list_images()
        .unwrap()
        .iter()
        .any(|r| r.id == img.id && r.repo_digests.len() == 1));

    // Refused: no digest, unknown image.
    assert!(store
        .add_repo_digest(&img.id, "127.0.0.1:5000/app:1")
        .is_err());
    assert!(store
        .add_repo_digest(
            &format!("sha256:{}", "cd".repeat(32)),
            &format!("x@{index}")
        )
        .is_err());

    // Re-committing the image keeps its repo digest; deleting it removes it.
    image(&store, "127.0.0.1:5000/app:1", "a");
    assert_eq!(store.get(&img.id).unwrap().repo_digests.len(), 1);
    store.delete_image(&img.id).unwrap();
    assert!(store
        .resolve(&format!("127.0.0.1:5000/app@{index}"))
        .unwrap()
        .is_none());
    assert!(store.get(&other.id).is_ok());
}

#[test]
fn cache_entries_lists_the_whole_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.cache_entries().unwrap().is_empty());
    let blob = store.put_blob(b"layer").unwrap();
    store
        .cache_put("k2", b"v2", std::slice::from_ref(&blob))
        .unwrap();
    store.cache_put("k1", b"v1", &[]).unwrap();
    let e = store.cache_entries().unwrap();
    let got: Vec<(&str, &[u8], &[String])> = e
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_slice(), e.blobs.as_slice()))
        .collect();
    assert_eq!(
        got,
        [("k1", &b"v1"[..], &[][..]), ("k2", &b"v2"[..], &[blob][..])]
    );
}
