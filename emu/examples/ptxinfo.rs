//! Loads PTX files and prints each entry point's decoded size, or the load error:
//! `cargo run -p pimoe-emu --example ptxinfo -- FILE.ptx...`.
fn main() {
    let mem = pimoe_emu::Memory::default();
    let mut failed = false;
    for path in std::env::args().skip(1) {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{path}: {e}");
                failed = true;
                continue;
            }
        };
        let t = std::time::Instant::now();
        match pimoe_emu::load_module(&mem, &text) {
            Ok(m) => {
                let mut names: Vec<_> = m.programs.values().collect();
                names.sort_by(|a, b| a.name.cmp(&b.name));
                println!(
                    "{path}: {} entry points, loaded in {:.1} ms",
                    names.len(),
                    t.elapsed().as_secs_f64() * 1e3
                );
                for p in names {
                    println!(
                        "  {:<48} {:>6} instructions {:>5} registers {:>6} B static shared, dynamic at {}",
                        p.name,
                        p.insts.len(),
                        p.nregs,
                        p.shared_static,
                        p.dyn_offset
                    );
                }
            }
            Err(e) => {
                eprintln!("{path}: {e}");
                failed = true;
            }
        }
    }
    std::process::exit(failed as i32);
}
