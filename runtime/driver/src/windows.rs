//! WHPX: the Windows Hypervisor Platform, which QEMU's `-accel whpx` uses.

use std::ffi::c_void;
use std::process::Command;

use windows_sys::Win32::Foundation::{CloseHandle, FreeLibrary, HANDLE};
use windows_sys::Win32::Security::{
    GetTokenInformation, TokenElevation, TOKEN_ELEVATION, TOKEN_QUERY,
};
use windows_sys::Win32::System::LibraryLoader::{
    GetProcAddress, LoadLibraryExW, LOAD_LIBRARY_SEARCH_SYSTEM32,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

use crate::{Accel, Backend, BackendState, DriverError};

const FEATURE: &str = "HypervisorPlatform";
const MISSING: &str =
    "WinHvPlatform.dll not found: the Windows Hypervisor Platform feature is not enabled";
/// `WHvCapabilityCodeHypervisorPresent`.
const CAPABILITY_HYPERVISOR_PRESENT: u32 = 0;
/// dism's "succeeded, restart required".
const DISM_RESTART_NEEDED: i32 = 3010;

type WHvGetCapability = unsafe extern "system" fn(
    code: u32,
    buffer: *mut c_void,
    buffer_size: u32,
    written: *mut u32,
) -> i32;

pub(crate) fn detect_whpx() -> Backend {
    let (state, detail) = whpx_state();
    Backend {
        accel: Accel::Whpx,
        state,
        detail,
    }
}

/// Loads WinHvPlatform.dll at run time: a static import would stop the exe
/// from starting wherever the feature (or Windows itself, under Wine) lacks it.
fn whpx_state() -> (BackendState, String) {
    let name: Vec<u16> = "WinHvPlatform.dll\0".encode_utf16().collect();
    // SAFETY: name is NUL-terminated; System32 only, so no planted DLL loads.
    let module = unsafe {
        LoadLibraryExW(
            name.as_ptr(),
            std::ptr::null_mut(),
            LOAD_LIBRARY_SEARCH_SYSTEM32,
        )
    };
    if module.is_null() {
        return (BackendState::Missing, MISSING.into());
    }
    // SAFETY: module is loaded; the name is NUL-terminated ASCII.
    let result = match unsafe { GetProcAddress(module, c"WHvGetCapability".as_ptr().cast()) } {
        None => (
            BackendState::NotUsable,
            "WHPX present but not usable (WinHvPlatform.dll has no WHvGetCapability)".into(),
        ),
        Some(proc_addr) => {
            // SAFETY: the documented signature of WHvGetCapability.
            let get_capability: WHvGetCapability = unsafe { std::mem::transmute(proc_addr) };
            // WHV_CAPABILITY is a union; HypervisorPresent is a BOOL in it,
            // and a generous buffer covers the whole union.
            let mut buffer = [0u8; 64];
            let mut written = 0u32;
            // SAFETY: buffer and written are valid for the sizes given.
            let hr = unsafe {
                get_capability(
                    CAPABILITY_HYPERVISOR_PRESENT,
                    buffer.as_mut_ptr().cast(),
                    buffer.len() as u32,
                    &mut written,
                )
            };
            let present = u32::from_le_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) != 0;
            classify(hr, present)
        }
    };
    // SAFETY: module came from LoadLibraryExW and nothing from it is kept.
    unsafe { FreeLibrary(module) };
    result
}

fn classify(hr: i32, present: bool) -> (BackendState, String) {
    if hr < 0 {
        (
            BackendState::NotUsable,
            format!("WHPX present but not usable (WHvGetCapability failed: HRESULT {hr:#010x})"),
        )
    } else if present {
        (
            BackendState::Usable,
            "the Windows Hypervisor Platform reports a hypervisor".into(),
        )
    } else {
        (
            BackendState::NotUsable,
            "WHPX present but not usable (hypervisor not present: enable virtualization \
             (VT-x/AMD-V) in the firmware and make sure the hypervisor starts: \
             bcdedit /set hypervisorlaunchtype auto, then reboot)"
                .into(),
        )
    }
}

fn is_elevated() -> bool {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the pseudo-handle needs no closing; token is written on success.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return false;
    }
    let mut elevation = TOKEN_ELEVATION { TokenIsElevated: 0 };
    let mut size = 0u32;
    // SAFETY: elevation is a TOKEN_ELEVATION of the size given.
    let ok = unsafe {
        GetTokenInformation(
            token,
            TokenElevation,
            (&mut elevation as *mut TOKEN_ELEVATION).cast(),
            std::mem::size_of::<TOKEN_ELEVATION>() as u32,
            &mut size,
        )
    };
    // SAFETY: token was opened above.
    unsafe { CloseHandle(token) };
    ok != 0 && elevation.TokenIsElevated != 0
}

fn dism_args(enable: bool) -> Vec<String> {
    let verb = if enable {
        "/Enable-Feature"
    } else {
        "/Disable-Feature"
    };
    let mut args = vec![
        "/Online".to_owned(),
        verb.to_owned(),
        format!("/FeatureName:{FEATURE}"),
    ];
    if enable {
        args.push("/All".into());
    }
    args.push("/NoRestart".into());
    args
}

/// The text for a user who is not elevated: both ways to do it by hand.
pub(crate) fn manual_text(enable: bool) -> String {
    let (what, cmdlet) = if enable {
        ("enable", "Enable-WindowsOptionalFeature")
    } else {
        ("disable", "Disable-WindowsOptionalFeature")
    };
    format!(
        "administrator rights are needed to {what} the Windows Hypervisor Platform; \
         in an elevated prompt run:\n  dism.exe {}\nor in an elevated PowerShell:\n  \
         {cmdlet} -Online -FeatureName {FEATURE}\nthen reboot.",
        dism_args(enable).join(" ")
    )
}

fn run_dism(enable: bool) -> Result<String, DriverError> {
    let args = dism_args(enable);
    let shown = format!("dism.exe {}", args.join(" "));
    let out = Command::new("dism.exe")
        .args(&args)
        .output()
        .map_err(|e| DriverError::Command {
            command: shown.clone(),
            reason: e.to_string(),
        })?;
    match out.status.code() {
        Some(0) | Some(DISM_RESTART_NEEDED) => Ok(format!(
            "ran `{shown}`: the Windows Hypervisor Platform is {}; reboot for it to take effect.",
            if enable { "enabled" } else { "disabled" }
        )),
        code => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let reason = stdout
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("Error"))
                .map_or_else(|| format!("exit code {code:?}"), str::to_owned);
            Err(DriverError::Command {
                command: shown,
                reason,
            })
        }
    }
}

pub(crate) fn install() -> Result<String, DriverError> {
    install_as(is_elevated())
}

pub(crate) fn remove() -> Result<String, DriverError> {
    remove_as(is_elevated())
}

fn install_as(elevated: bool) -> Result<String, DriverError> {
    let whpx = detect_whpx();
    if whpx.state == BackendState::Usable {
        return Ok("WHPX is already usable; nothing to install.".into());
    }
    if elevated {
        run_dism(true)
    } else {
        Ok(format!(
            "{}
({})",
            manual_text(true),
            whpx.detail
        ))
    }
}

fn remove_as(elevated: bool) -> Result<String, DriverError> {
    if elevated {
        run_dism(false)
    } else {
        Ok(manual_text(false))
    }
}

/// Wine's ntdll exports `wine_get_version`; Windows' does not.
#[cfg(test)]
fn under_wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::GetModuleHandleW;
    let ntdll: Vec<u16> = "ntdll.dll\0".encode_utf16().collect();
    // SAFETY: ntdll is always loaded; the names are NUL-terminated.
    unsafe {
        let module = GetModuleHandleW(ntdll.as_ptr());
        !module.is_null() && GetProcAddress(module, c"wine_get_version".as_ptr().cast()).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whpx_check_does_not_crash() {
        let b = detect_whpx();
        eprintln!("{b:?}");
        assert_eq!(b.accel, Accel::Whpx);
        // Under Wine the DLL is absent; on Windows it may be anything.
        assert!(!b.detail.is_empty());
        if b.state == BackendState::Missing {
            assert_eq!(b.detail, MISSING);
        }
    }

    #[test]
    fn report_lists_whpx_not_kvm() {
        let r = crate::detect(&crate::ProbeOptions::default());
        assert!(r.backend(Accel::Whpx).is_some());
        assert!(r.backend(Accel::Kvm).is_none());
        assert!(r.choose(Accel::Kvm).is_err());
        assert!(!r.from_cache);
        if r.backend(Accel::Whpx).map(|b| b.state) != Some(BackendState::Usable) {
            assert_eq!(r.best(), Accel::Tcg);
        }
    }

    #[test]
    fn manual_commands() {
        let t = manual_text(true);
        assert!(t.contains(
            "dism.exe /Online /Enable-Feature /FeatureName:HypervisorPlatform /All /NoRestart"
        ));
        assert!(t.contains("Enable-WindowsOptionalFeature -Online -FeatureName HypervisorPlatform"));
        let t = manual_text(false);
        assert!(t.contains(
            "dism.exe /Online /Disable-Feature /FeatureName:HypervisorPlatform /NoRestart"
        ));
        assert!(t.contains("Disable-WindowsOptionalFeature"));
    }

    #[test]
    fn install_when_not_elevated_names_the_command() {
        let t = install_as(false).unwrap();
        // Either already usable, or the exact command to run.
        assert!(
            t.contains("nothing to install")
                || t.contains(
                    "dism.exe /Online /Enable-Feature /FeatureName:HypervisorPlatform /All /NoRestart"
                ),
            "{t}"
        );
        let t = remove_as(false).unwrap();
        assert!(t.contains("/Disable-Feature"), "{t}");
    }

    /// Only under Wine, where there is no feature to change: the elevated
    /// path must run dism and report the outcome in one line, not crash.
    #[test]
    fn elevated_install_under_wine_reports_dism() {
        if !under_wine() {
            eprintln!("not under Wine: would really change Windows features; skipped");
            return;
        }
        eprintln!("under Wine, elevated: {}", is_elevated());
        for result in [install_as(true), remove_as(true)] {
            eprintln!("{result:?}");
            match result {
                Ok(t) => assert!(
                    t.contains("dism.exe") || t.contains("nothing to install"),
                    "{t}"
                ),
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.starts_with("`dism.exe /Online /"), "{e}");
                    assert!(!e.contains('\n'), "{e}");
                }
            }
        }
    }

    #[test]
    fn classify_results() {
        assert_eq!(classify(0, true).0, BackendState::Usable);
        let (state, detail) = classify(0, false);
        assert_eq!(state, BackendState::NotUsable);
        assert!(detail.contains("hypervisor not present"));
        let (state, detail) = classify(0x8000_4005_u32 as i32, false);
        assert_eq!(state, BackendState::NotUsable);
        assert!(detail.contains("0x80004005"), "{detail}");
    }
}
