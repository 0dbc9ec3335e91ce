//! Regenerates the committed evaluation corpus:
//! `cargo run -p palisade-scan --example gen_corpus`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("labelled.jsonl"),
        common::to_jsonl(&common::labelled(common_n())),
    )
    .unwrap();
    std::fs::write(
        dir.join("negatives.jsonl"),
        common::to_jsonl(&common::negatives(300)),
    )
    .unwrap();
    println!("wrote {}", dir.display());
}

fn common_n() -> usize {
    900
}
