#!/usr/bin/env python3
"""Compares what cairn and BuildKit built for one case of the differential suite.

    compare.py OUTDIR

OUTDIR holds, for each side S in (cairn, docker): S.tar (the rootfs, from `build -o type=tar`),
S.inspect.json (`inspect IMAGE`), S.history (`history --no-trunc --format '{{.CreatedBy}}'`, one
row per line). With --ignore=FILE, rootfs paths matching one of FILE's regexes are skipped. Prints the differences, one per line (at most --max), and exits 1 if there are any.

File trees are compared on path, type, permission bits (with setuid/setgid/sticky), uid/gid, size,
sha256 of the content and link target; mtimes are not compared. A hard link is compared as the file
it links to (exporters choose which of the names is the "first" one differently).
"""
import hashlib
import json
import re
import sys
import tarfile

# Config fields that the suite compares (docker inspect's .Config names).
FIELDS = ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels",
          "StopSignal", "Healthcheck", "OnBuild", "Shell"]

TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir",
         tarfile.SYMTYPE: "symlink", tarfile.CHRTYPE: "chardev", tarfile.BLKTYPE: "blockdev",
         tarfile.FIFOTYPE: "fifo", tarfile.LNKTYPE: "hardlink"}


def norm(p):
    while p.startswith("./"):
        p = p[2:]
    p = p.strip("/")
    if p == ".":
        p = ""
    return "/" + p if p else "/"


def tree(path):
    """{path: (type, mode, uid, gid, size, sha256, linkname)} of a tar's members."""
    out = {}
    with tarfile.open(path) as t:
        members = t.getmembers()
        by_name = {}
        for m in members:
            name = norm(m.name)
            if m.type == tarfile.LNKTYPE:
                continue
            digest = ""
            if m.isreg():
                h = hashlib.sha256()
                f = t.extractfile(m)
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                digest = h.hexdigest()[:16]
            link = m.linkname if m.issym() else ""
            dev = f"{m.devmajor},{m.devminor}" if m.ischr() or m.isblk() else ""
            entry = (TYPES.get(m.type, m.type), oct(m.mode & 0o7777), m.uid, m.gid,
                     m.size if m.isreg() else 0, digest, link or dev)
            out[name] = entry
            by_name[name] = entry
        for m in members:
            if m.type == tarfile.LNKTYPE:
                target = by_name.get(norm(m.linkname))
                out[norm(m.name)] = target if target else ("hardlink", "", "", "", 0, "",
                                                           norm(m.linkname))
    return out


def show(e):
    if e is None:
        return "absent"
    typ, mode, uid, gid, size, digest, link = e
    s = f"{typ} {mode} {uid}:{gid}"
    if typ == "file":
        s += f" {size}B sha256:{digest}"
    if link:
        s += f" -> {link}"
    return s


def empty(v):
    return v is None or v == [] or v == {} or v == ""


def config(path):
    with open(path) as f:
        doc = json.load(f)
    if isinstance(doc, list):
        doc = doc[0]
    cfg = doc.get("Config") or {}
    res = {}
    for k in FIELDS:
        v = cfg.get(k)
        res[k] = None if empty(v) else v
    return res


def history(path):
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    limit = 8
    ignore = []
    for a in sys.argv[1:]:
        if a.startswith("--max="):
            limit = int(a[6:])
        elif a.startswith("--ignore="):
            # one regex a line: rootfs paths whose content is not reproducible (e.g. caches
            # holding timestamps); their entries are left out on both sides
            with open(a[9:]) as f:
                ignore = [re.compile(x.strip()) for x in f if x.strip() and not x.startswith("#")]
    d = args[0]
    diffs = []
    try:
        a, b = tree(f"{d}/cairn.tar"), tree(f"{d}/docker.tar")
        for p in sorted(set(a) | set(b)):
            if any(r.search(p) for r in ignore):
                continue
            if a.get(p) != b.get(p):
                diffs.append(f"rootfs {p}: cairn {show(a.get(p))} / buildkit {show(b.get(p))}")
    except (OSError, tarfile.TarError) as e:
        diffs.append(f"rootfs: {e}")
    try:
        a, b = config(f"{d}/cairn.inspect.json"), config(f"{d}/docker.inspect.json")
        for k in FIELDS:
            if a[k] != b[k]:
                diffs.append(f"config {k}: cairn {json.dumps(a[k])} / buildkit {json.dumps(b[k])}")
    except (OSError, ValueError) as e:
        diffs.append(f"config: {e}")
    try:
        a, b = history(f"{d}/cairn.history"), history(f"{d}/docker.history")
        if len(a) != len(b):
            diffs.append(f"history: {len(a)} rows in cairn / {len(b)} in buildkit")
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                diffs.append(f"history row {i}: cairn '{x}' / buildkit '{y}'")
    except OSError as e:
        diffs.append(f"history: {e}")
    with open(f"{d}/diff.txt", "w") as f:
        f.write("".join(x + "\n" for x in diffs))
    for x in diffs[:limit]:
        print(x)
    if len(diffs) > limit:
        print(f"... {len(diffs) - limit} more in {d}/diff.txt")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
