//! Rebuilds the crate when a migration changes: `embed_migrations!` reads the files at compile time.

fn main() {
    for backend in ["sqlite", "postgres", "mysql"] {
        println!("cargo:rerun-if-changed=../migrations/{backend}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
