//! The C interface from C: tests/c/generate.c is compiled with the system C compiler
//! (`$CC`, else `cc`), linked against the libpimoe.so and libpimoe.a of this build, and
//! run on the tiny Qwen2 fixture, on a composition whose expert fires, and on the CUDA
//! backend (a GPU, else the PTX emulator) with a random model of the kernels' head size.
//! Every event it prints must be the one the Rust API gives for the same request on the
//! same backend, expert inputs and outputs bit for bit; its error paths must give the
//! right status and message.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pimoe::backend::cpu::CpuBackend;
use pimoe::backend::Backend;
use pimoe::sampling::SamplingParams;
use pimoe::scheduler::{Event, Provenance};
use pimoe::{Engine, Finish, Prompt, Request};

use common::compose::{composition, cuda_sized_model, GOOD};
use common::{fixtures, scratch_dir};

/// The libraries `rustc --print native-static-libs` lists for libpimoe.a on Linux.
const STATIC_LIBS: &[&str] = &["-ldl", "-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-lc"];

/// The C compiler, or None (with the reason printed) when there is none.
fn c_compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    match Command::new(&cc).arg("--version").output() {
        Ok(o) if o.status.success() => Some(cc),
        _ => {
            eprintln!("SKIPPED: no C compiler (`{cc} --version` failed; set CC to use another)");
            None
        }
    }
}

/// Cargo builds the cdylib and staticlib next to this test's executable.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().to_path_buf();
    for lib in ["libpimoe.so", "libpimoe.a"] {
        assert!(dir.join(lib).is_file(), "{lib} is not in {}: is crate-type in Cargo.toml?", dir.display());
    }
    dir
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{stderr}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

/// The C program's flags: strict C99, every warning an error.
fn compile(cc: &str, out: &Path, link: &[String]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    run(Command::new(cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-I"])
        .arg(root.join("include"))
        .arg(root.join("tests/c/generate.c"))
        .args(link)
        .arg("-o")
        .arg(out));
}

/// What generate.c prints for a text: printable ASCII but \ and ", else \xNN.
fn escape(text: &str) -> String {
    let mut s = String::from("\"");
    for b in text.bytes() {
        match b {
            b'\\' | b'"' => s.extend(['\\', b as char]),
            0x20..0x7f => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s + "\""
}

/// One event line as generate.c prints it for request `req`, numbers kept as f64 (the
/// C side prints them with 17 digits, which parse back to the same double).
#[derive(Debug, PartialEq)]
enum Source {
    Llm,
    Expert(String, Vec<f64>, Vec<f64>),
    Failed(String),
}

#[derive(Debug, PartialEq)]
enum Line {
    Token { req: usize, token: u32, source: Source, text: String },
    Note { req: usize, text: String },
    Finished(usize, String),
}

fn parse(line: &str) -> Option<Line> {
    let mut w = line.splitn(4, ' ');
    let (kind, req) = (w.next()?, w.next()?.parse().ok()?);
    match kind {
        "token" => {
            let token = w.next()?.parse().ok()?;
            let rest = w.next()?;
            let quote = rest.find('"')?;
            let (source, text) = (rest[..quote].trim_end(), rest[quote..].to_string());
            let source = match source.split_once(' ') {
                None if source == "llm" => Source::Llm,
                Some(("failed", name)) => Source::Failed(name.to_string()),
                Some(("expert", numbers)) => {
                    let mut w = numbers.split(' ');
                    let name = w.next()?.to_string();
                    let mut values = |label: &str| -> Option<Vec<f64>> {
                        (w.next()? == label).then_some(())?;
                        let n: usize = w.next()?.parse().ok()?;
                        (0..n).map(|_| w.next()?.parse().ok()).collect()
                    };
                    Source::Expert(name, values("in")?, values("out")?)
                }
                _ => return None,
            };
            Some(Line::Token { req, token, source, text })
        }
        "note" => Some(Line::Note { req, text: w.collect::<Vec<_>>().join(" ") }),
        "finished" => Some(Line::Finished(req, w.collect::<Vec<_>>().join(" "))),
        _ => None,
    }
}

/// The lines the Rust API gives for `req` run alone, as request `index`.
fn expected<B: Backend>(engine: &Engine<B>, index: usize, req: &Request) -> Vec<Line> {
    let mut lines = Vec::new();
    engine
        .generate_events(req, |ev| {
            lines.push(match ev {
                Event::Token { token, text, provenance, .. } => Line::Token {
                    req: index,
                    token: *token,
                    source: match &**provenance {
                        Provenance::Llm => Source::Llm,
                        Provenance::Expert { expert, inputs, outputs } => {
                            Source::Expert(expert.clone(), inputs.clone(), outputs.clone())
                        }
                        Provenance::Failed { expert, .. } => Source::Failed(expert.clone()),
                    },
                    text: escape(text),
                },
                Event::Note { message, .. } => Line::Note { req: index, text: escape(message) },
                Event::Finished { finish, stats, .. } => {
                    let finish = match finish {
                        Finish::Stop => "stop",
                        Finish::Length => "length",
                        Finish::Context => "context",
                        Finish::ExpertFailed => "expert_failed",
                        Finish::NonFinite => "non_finite",
                    };
                    Line::Finished(
                        index,
                        format!(
                            "{finish} prompt {} generated {} injected {} expert_calls {} expert_failures {}",
                            stats.prompt_tokens,
                            stats.generated_tokens,
                            stats.injected_tokens,
                            stats.expert_calls,
                            stats.expert_failures
                        ),
                    )
                }
            })
        })
        .unwrap();
    lines
}

fn request(prompt: Prompt, max_tokens: usize, sampling: SamplingParams) -> Request {
    Request { prompt, max_tokens, sampling }
}

/// The requests generate.c submits, in its order.
fn plain_requests() -> Vec<Request> {
    let chat =
        |system: Option<&str>, user: &str| Prompt::Chat { system: system.map(Into::into), user: user.into() };
    vec![
        request(
            Prompt::Raw("Hello there".into()),
            12,
            SamplingParams { temperature: 0.9, top_k: 40, top_p: 0.95, seed: 3 },
        ),
        request(chat(Some("You are terse."), "Name a colour."), 10, SamplingParams::default()),
        request(chat(None, "one two three"), 50, SamplingParams::default()),
    ]
}

fn lines_of(output: &[Line], req: usize) -> Vec<&Line> {
    output
        .iter()
        .filter(|l| match l {
            Line::Token { req: r, .. } | Line::Note { req: r, .. } | Line::Finished(r, _) => *r == req,
        })
        .collect()
}

fn check_run<B: Backend>(
    events: &[Line],
    engine: &Engine<B>,
    reqs: &[Request],
    cancelled: Option<(usize, usize)>,
) {
    for (i, r) in reqs.iter().enumerate() {
        let want = expected(engine, i, r);
        let got = lines_of(events, i);
        match cancelled {
            // A cancelled request stops after the tokens it had, with no Finished line.
            Some((victim, after)) if victim == i => {
                assert_eq!(got.len(), after, "request {i} after its cancel: {got:?}");
                assert!(want.len() > after, "request {i} ends before it is cancelled");
                assert_eq!(got, want.iter().take(after).collect::<Vec<_>>(), "request {i}");
            }
            _ => assert_eq!(got, want.iter().collect::<Vec<_>>(), "request {i}"),
        }
    }
}

/// The error lines, by what was tried: (status, message).
fn errors(output: &str) -> BTreeMap<&str, (&str, &str)> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("error "))
        .map(|l| {
            let mut w = l.splitn(3, ' ');
            (w.next().unwrap(), (w.next().unwrap(), w.next().unwrap_or("")))
        })
        .collect()
}

#[test]
fn c_program_generates_with_provenance_and_reports_errors() {
    let Some(cc) = c_compiler() else { return };
    let dir = scratch_dir("c-abi");
    let libs = lib_dir();
    let dynamic = dir.join("generate");
    let rpath = format!("-Wl,-rpath,{}", libs.display());
    compile(&cc, &dynamic, &[format!("-L{}", libs.display()), "-lpimoe".into(), rpath]);

    let model = fixtures().join("tiny-qwen2");
    let manifest = composition("c-abi-compose", r#"{ "refractory": 3, "max_firings": 2 }"#);
    // The CUDA run: a GPU where there is one, else the PTX emulator, in the C program's
    // process as in this one (common::cuda).
    let cuda_model = cuda_sized_model("c-abi-cuda-model");
    let gpu = pimoe::backend::cuda::driver::gpu_driver_present();
    let cuda_env = |cmd: &mut Command| {
        if !gpu {
            cmd.env("PIMOE_CUDA", "emu");
        }
    };
    // Cargo's LD_LIBRARY_PATH for tests names target/release, where an older
    // libpimoe.so from `cargo build` may lie; the program must load this build's, by its rpath.
    let mut cmd = Command::new(&dynamic);
    cuda_env(&mut cmd);
    let output = run(cmd.env_remove("LD_LIBRARY_PATH").arg(&model).arg(&manifest).arg(&cuda_model));
    eprintln!("{output}");
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines[0], format!("version {} abi 2", env!("CARGO_PKG_VERSION")));
    assert_eq!(*lines.last().unwrap(), "done 0", "an error path gave the wrong status");
    assert!(lines.iter().any(|l| l.starts_with("auto device: ")), "no device line");

    let errs = errors(&output);
    let missing = errs["missing-dir"];
    assert_eq!(missing.0, "PIMOE_ERR_IO");
    assert!(missing.1.contains("/nonexistent/pimoe-model") && missing.1.contains("not found"), "{missing:?}");
    assert_eq!(errs["null-path"], ("PIMOE_ERR_ARGUMENT", "path is NULL"));
    assert!(errs["bad-device"].1.contains("device 7"), "{:?}", errs["bad-device"]);
    assert!(errs["bad-utf8-path"].1.contains("not valid UTF-8"), "{:?}", errs["bad-utf8-path"]);
    assert_eq!(
        errs["bad-utf8-prompt"],
        ("PIMOE_ERR_ARGUMENT", "request.prompt is not valid UTF-8 (at byte 3)")
    );
    assert!(errs["zero-top-p"].1.contains("top-p"), "{:?}", errs["zero-top-p"]);
    assert!(errs["zero-max-tokens"].1.contains("max_tokens"), "{:?}", errs["zero-max-tokens"]);
    assert!(errs["cancel-unknown"].1.contains("request 999"), "{:?}", errs["cancel-unknown"]);
    assert!(errs["cancel-twice"].1.contains("not running"), "{:?}", errs["cancel-twice"]);

    let (_, runs) = output.split_once("run plain\n").expect("no plain run");
    let (plain_run, runs) = runs.split_once("run cuda\n").expect("no CUDA run");
    let (cuda_run, composed_run) = runs.split_once("run composition\n").expect("no composition run");
    let events = |text: &str| text.lines().filter_map(parse).collect::<Vec<Line>>();

    let plain = Engine::load(CpuBackend, &model).unwrap();
    check_run(&events(plain_run), &plain, &plain_requests(), Some((2, 2)));

    let device = lines.iter().find_map(|l| l.strip_prefix("cuda device: ")).expect("no CUDA device line");
    assert!(device.starts_with("device: cuda"), "{device}");
    let on_cuda = Engine::load(common::cuda("c_program on CUDA"), &cuda_model).unwrap();
    check_run(&events(cuda_run), &on_cuda, &plain_requests(), Some((2, 2)));

    let composed = Engine::load_manifest(CpuBackend, &manifest).unwrap();
    let reqs = [GOOD, "Solve A = [1, 2, 2, 4] and b = [3, 5]."]
        .map(|p| request(Prompt::Raw(p.into()), 40, SamplingParams::default()));
    let composed_events = events(composed_run);
    check_run(&composed_events, &composed, &reqs, None);
    let (name, inputs, outputs) = composed_events
        .iter()
        .find_map(|l| match l {
            Line::Token { source: Source::Expert(name, inputs, outputs), .. } => {
                Some((name, inputs, outputs))
            }
            _ => None,
        })
        .expect("the expert never fired through the C interface");
    assert_eq!(name, "solve");
    assert_eq!(inputs, &[2.0, 1.0, 1.0, 3.0, 3.0, 5.0]);
    assert!((outputs[0] - 0.8).abs() < 1e-15 && (outputs[1] - 1.4).abs() < 1e-15, "{outputs:?}");
    // The singular system: failure tokens named for the expert, and a finish that says so.
    let failed: Vec<&Line> = lines_of(&composed_events, 1);
    assert!(
        failed.iter().any(|l| matches!(l, Line::Token { source: Source::Failed(n), .. } if n == "solve")),
        "{failed:?}"
    );
    assert!(
        matches!(failed.last(), Some(Line::Finished(_, f)) if f.starts_with("expert_failed") && f.ends_with("expert_failures 1")),
        "{failed:?}"
    );

    // The same program linked statically prints the same.
    let fixed = dir.join("generate-static");
    let mut link = vec![libs.join("libpimoe.a").display().to_string()];
    link.extend(STATIC_LIBS.iter().map(|s| s.to_string()));
    compile(&cc, &fixed, &link);
    let mut cmd = Command::new(&fixed);
    cuda_env(&mut cmd);
    // Linked in, pimoe cannot find the emulator beside its own library file.
    let emu_lib = libs.join("libpimoe_emu.so");
    assert_eq!(run(cmd.env("PIMOE_EMU_LIB", emu_lib).arg(&model).arg(&manifest).arg(&cuda_model)), output);
}

#[test]
fn header_compiles_as_cpp() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    if Command::new(&cxx).arg("--version").output().map_or(true, |o| !o.status.success()) {
        eprintln!("SKIPPED: no C++ compiler (`{cxx} --version` failed; set CXX to use another)");
        return;
    }
    let dir = scratch_dir("c-abi-cpp");
    let src = dir.join("use.cpp");
    std::fs::write(
        &src,
        "#include \"pimoe.h\"\nint main() { pimoe_request r = pimoe_request_default(); return r.chat; }\n",
    )
    .unwrap();
    run(Command::new(&cxx)
        .args(["-std=c++11", "-Wall", "-Wextra", "-pedantic", "-Werror", "-fsyntax-only", "-I"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("include"))
        .arg(&src));
}
