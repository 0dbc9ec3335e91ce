//! Writes the exact prose texts the criterion bench scans (`benches/scan.rs`: the first
//! 4 KB and 64 KB of `common::prose`) to a directory, so other tools (bench/presidio)
//! read identical bytes: `cargo run -p palisade-scan --example bench_texts -- DIR`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/bench-texts".to_string());
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir).unwrap();
    let prose = common::prose(1 << 20);
    for size in [4usize << 10, 64 << 10] {
        let t = &prose[..prose.floor_char_boundary(size.min(prose.len()))];
        let path = dir.join(format!("prose_{}KB.txt", size >> 10));
        std::fs::write(&path, t).unwrap();
        println!("{} {} bytes", path.display(), t.len());
    }
}
