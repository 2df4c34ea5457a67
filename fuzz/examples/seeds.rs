//! Rewrites `fuzz/corpus/` from the real encoders: `cargo run -p fuzzing --example seeds`.

fn main() -> std::io::Result<()> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let corpus = fuzzing::seeds::corpus(&repo);
    fuzzing::seeds::write(&corpus, &fuzzing::corpus_dir())?;
    for (target, seeds) in &corpus {
        let bytes: usize = seeds.values().map(Vec::len).sum();
        println!("{target}: {} seeds, {bytes} bytes", seeds.len());
    }
    Ok(())
}
