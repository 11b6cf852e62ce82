//! PID 1 of the kernel smoke test. Built statically (musl) for the guest
//! architecture and packed into an initramfs by `cargo xtask initramfs`.
//!
//! It checks, from inside the guest, what the coLinux kernel patches
//! promise, prints one `SMOKE <check>: ok|FAIL …` line per check and a final
//! `SMOKE RESULT: PASS|FAIL`, then powers the machine off. The host side
//! (xtask/tests/kernel.rs) reads those lines from the serial console.
//!
//! What it checks comes from the kernel command line:
//! `smoke.disks=N` disks named cobd0..cobdN-1 with major 117, `smoke.root`
//! (ext4 on cobd0, holding the file named by `smoke.file`), `smoke.share`
//! (the cofs share cofs0, holding the same file).

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

fn main() {
    if std::process::id() != 1 {
        eprintln!("guest-init is the init of a test guest; it only runs as PID 1");
        std::process::exit(2);
    }
    let mut failed = 0;
    let mut check = |name: &str, result: Result<String, String>| match result {
        Ok(detail) => println!("SMOKE {name}: ok {detail}"),
        Err(why) => {
            failed += 1;
            println!("SMOKE {name}: FAIL {why}");
        }
    };
    check("mount /dev /proc /sys", base_mounts());
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let arg = |key: &str| {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
    };
    let file = arg("smoke.file=").unwrap_or_else(|| "hello.txt".into());
    let disks: u32 = arg("smoke.disks=")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    for n in 0..disks {
        check(&format!("cobd{n}"), cobd(n));
    }
    if cmdline.split_whitespace().any(|w| w == "smoke.root") {
        check(
            "ext4 on cobd0",
            mount_and_read("/dev/cobd0", "/mnt/root", "ext4", "ro", &file),
        );
    }
    if cmdline.split_whitespace().any(|w| w == "smoke.share") {
        check(
            "cofs cofs0",
            mount_and_read("cofs0", "/mnt/share", "cofs", "", &file),
        );
        check(
            "cofs cofs0:sub",
            mount_and_read("cofs0:sub", "/mnt/sub", "cofs", "", &file),
        );
        check("cofs uid/gid/fmask", cofs_options(&file));
        check("cofs rejects bad options", cofs_rejects());
    }
    println!(
        "SMOKE RESULT: {}",
        if failed == 0 { "PASS" } else { "FAIL" }
    );
    // SAFETY: sync and reboot are plain system calls; PID 1 powering off
    // is how this guest ends.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
}

fn mount(source: &str, target: &str, fstype: &str, data: &str) -> Result<(), String> {
    let _ = fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).expect("no NUL in our strings");
    let (source_c, target_c, fstype_c, data_c) = (c(source), c(target), c(fstype), c(data));
    let flags = if data.split(',').any(|o| o == "ro") {
        libc::MS_RDONLY
    } else {
        0
    };
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let r = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            flags,
            data_c.as_ptr().cast(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "mount -t {fstype} {source} {target} -o {data:?}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// /dev, /proc and /sys. With root= on a disk, the kernel has already
/// mounted devtmpfs on /dev (CONFIG_DEVTMPFS_MOUNT): busy is fine.
fn base_mounts() -> Result<String, String> {
    let mut already = Vec::new();
    for (fstype, target) in [("devtmpfs", "/dev"), ("proc", "/proc"), ("sysfs", "/sys")] {
        match mount(fstype, target, fstype, "") {
            Ok(()) => {}
            Err(e) if e.contains("Resource busy") => already.push(target),
            Err(e) => return Err(e),
        }
    }
    Ok(if already.is_empty() {
        String::new()
    } else {
        format!("(already mounted: {})", already.join(" "))
    })
}

fn cobd(n: u32) -> Result<String, String> {
    let path = format!("/dev/cobd{n}");
    let meta = fs::metadata(&path).map_err(|e| format!("{path}: {e}"))?;
    if !meta.file_type().is_block_device() {
        return Err(format!("{path} is not a block device"));
    }
    let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
    if (major, minor) != (117, n) {
        return Err(format!("{path} is {major}:{minor}, not 117:{n}"));
    }
    Ok(format!("{path} 117:{n}"))
}

fn mount_and_read(
    source: &str,
    target: &str,
    fstype: &str,
    data: &str,
    file: &str,
) -> Result<String, String> {
    mount(source, target, fstype, data)?;
    let path = format!("{target}/{file}");
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    Ok(format!("{path} says {:?}", text.trim()))
}

fn cofs_options(file: &str) -> Result<String, String> {
    mount(
        "cofs0",
        "/mnt/opts",
        "cofs",
        "uid=1234,gid=4321,fmask=0177,dmask=0022",
    )?;
    let path = format!("/mnt/opts/{file}");
    let meta = fs::metadata(&path).map_err(|e| format!("{path}: {e}"))?;
    let mode = meta.mode() & 0o777;
    if (meta.uid(), meta.gid()) != (1234, 4321) || mode & 0o177 != 0 {
        return Err(format!(
            "{path} is {}:{} mode {mode:o}, wanted 1234:4321 and no bits of 0177",
            meta.uid(),
            meta.gid()
        ));
    }
    Ok(format!(
        "{path} is {}:{} mode {mode:o}",
        meta.uid(),
        meta.gid()
    ))
}

fn cofs_rejects() -> Result<String, String> {
    match mount("cofs0", "/mnt/bad", "cofs", "nosuchoption=1") {
        Err(e) if e.contains("Invalid argument") => Ok("nosuchoption=1 refused".into()),
        Err(e) => Err(format!("refused, but not with EINVAL: {e}")),
        Ok(()) => Err("mounted with nosuchoption=1".into()),
    }
}
