//! The coLinux config language on arbitrary text: a config file, the file
//! every `@include` reads, and command-line arguments, separated by NULs.
//! Nothing touches the disk.
#![no_main]
use std::path::Path;

use colinux_config::Parser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let Ok(config) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
        return;
    };
    let included = parts.next().unwrap_or_default().to_vec();
    let args: Vec<String> = parts
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();

    let mut parser = Parser::with_reader("/fuzz", move |_: &Path| Ok(included.clone()));
    let outcome = parser
        .config_text(config, Path::new("/fuzz/colinux.conf"))
        .and_then(|()| args.iter().try_for_each(|arg| parser.arg(arg)))
        .and_then(|()| parser.finish());
    match outcome {
        Err(error) => assert!(!error.to_string().contains('\n')),
        Ok(settings) => {
            assert!(settings.kernel_cmdline(&[]).is_ok());
            let _ = settings.describe(Some(4096));
        }
    }
});
