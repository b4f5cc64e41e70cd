//! `secretgate-package --wasm FILE --out DIR --version V --revision COMMIT
//! --created YYYY-MM-DDTHH:MM:SSZ --source URL`: writes the release files
//! (see the library). `package/package.sh` (`make package`) fills in the
//! flags from git and the filter's Cargo.toml.

use std::path::PathBuf;
use std::process::ExitCode;

use secretgate_package::{output, Release};

const USAGE: &str = "usage: secretgate-package --wasm FILE --out DIR --version V --revision COMMIT --created YYYY-MM-DDTHH:MM:SSZ --source URL";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("secretgate-package: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<String, String> {
    let flags = Flags::parse(args)?;
    let wasm =
        std::fs::read(&flags.wasm).map_err(|e| format!("reading {}: {e}", flags.wasm.display()))?;
    let release = Release::new(
        &flags.version,
        &flags.revision,
        &flags.created,
        &flags.source,
    )
    .map_err(|e| e.to_string())?;
    let files = output::release_files(&wasm, &release).map_err(|e| e.to_string())?;
    output::write(&flags.out, &files).map_err(|e| e.to_string())?;
    Ok(format!(
        "wrote {} files to {}: oci:{}/{}:{} (oci variant), oci:{}/{}:{} (compat variant)",
        files.len(),
        flags.out.display(),
        flags.out.display(),
        output::LAYOUT_DIR,
        release.oci_ref_name(),
        flags.out.display(),
        output::LAYOUT_DIR,
        release.compat_ref_name(),
    ))
}

struct Flags {
    wasm: PathBuf,
    out: PathBuf,
    version: String,
    revision: String,
    created: String,
    source: String,
}

impl Flags {
    fn parse(args: Vec<String>) -> Result<Flags, String> {
        let mut wasm = None;
        let mut out = None;
        let mut version = None;
        let mut revision = None;
        let mut created = None;
        let mut source = None;
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let slot = match flag.as_str() {
                "--wasm" => &mut wasm,
                "--out" => &mut out,
                "--version" => &mut version,
                "--revision" => &mut revision,
                "--created" => &mut created,
                "--source" => &mut source,
                "-h" | "--help" => return Err(USAGE.to_owned()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            };
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            if slot.replace(value).is_some() {
                return Err(format!("{flag} given twice"));
            }
        }
        let need = |value: Option<String>, flag: &str| {
            value.ok_or_else(|| format!("{flag} is required\n{USAGE}"))
        };
        Ok(Flags {
            wasm: PathBuf::from(need(wasm, "--wasm")?),
            out: PathBuf::from(need(out, "--out")?),
            version: need(version, "--version")?,
            revision: need(revision, "--revision")?,
            created: need(created, "--created")?,
            source: need(source, "--source")?,
        })
    }
}
