#!/usr/bin/env python3
"""Checks the minimum supported Rust versions that the workspace declares.

For each workspace crate with a `rust-version`, every crate it builds with must declare a
`rust-version` no newer than that crate's own. "Builds with" means the normal and build
dependencies, all features on, as locked in Cargo.lock, plus the crate's own dev-dependencies.
It prints one line per crate and exits 1 if any dependency needs a newer Rust.

This checks what the crates declare; the code itself is checked against its `rust-version` by
clippy's `incompatible_msrv` lint (on by default, denied in CI). The machine has one toolchain,
so no older compiler is run.

Usage: python3 .ci/msrv.py   (from the repository root; runs `cargo metadata --locked`)
"""
import json
import subprocess
import sys


def version(text):
    """`1.88` and `1.88.0` alike, as (1, 88, 0)."""
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--all-features", "--locked"],
        check=True, capture_output=True, text=True).stdout)
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}

    def built_with(root):
        seen, stack = set(), [root]
        while stack:
            pkg = stack.pop()
            if pkg in seen:
                continue
            seen.add(pkg)
            for dep in nodes[pkg]["deps"]:
                kinds = {k["kind"] for k in dep["dep_kinds"]}
                if pkg == root or kinds & {None, "build"}:
                    stack.append(dep["pkg"])
        seen.discard(root)
        return seen

    failed = False
    for member in sorted(meta["workspace_members"], key=lambda m: packages[m]["name"]):
        crate = packages[member]
        if not crate.get("rust_version"):
            print(f"{crate['name']}: declares no rust-version, not checked")
            continue
        own = version(crate["rust_version"])
        too_new = sorted(
            (version(packages[p]["rust_version"]), packages[p]["name"], packages[p]["version"],
             packages[p]["rust_version"])
            for p in built_with(member)
            if packages[p].get("rust_version") and version(packages[p]["rust_version"]) > own)
        if too_new:
            failed = True
            listed = ", ".join(f"{name} {ver} (rust-version {text})"
                               for _, name, ver, text in too_new)
            print(f"{crate['name']}: rust-version {crate['rust_version']}, but needs newer: {listed}")
        else:
            print(f"{crate['name']}: rust-version {crate['rust_version']}: every dependency fits")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
