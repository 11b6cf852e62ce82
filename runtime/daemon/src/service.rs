//! `--install-service` / `--remove-service`: a systemd unit on Linux, a
//! Windows service on Windows. Either way the service runs
//! `colinux-daemon -d --name NAME CONFIG…`, and stopping it powers the
//! guest off cleanly (SIGTERM, or the service stop control).

use std::path::{Path, PathBuf};

use crate::supervise::{exit, StartError};

fn failed(message: String) -> StartError {
    StartError::new(exit::ENGINE_FAILED, message)
}

/// The daemon's own path, for the service to run.
fn daemon_exe() -> Result<PathBuf, StartError> {
    std::env::current_exe()
        .map_err(|e| failed(format!("cannot find colinux-daemon's own path: {e}")))
}

/// The arguments the service runs the daemon with: detached, named, from
/// the directory the install ran in (relative paths keep their meaning).
pub fn service_args(name: &str, cwd: &Path, config: &[String]) -> Vec<String> {
    let mut args = vec![
        "--cwd".to_string(),
        cwd.display().to_string(),
        "-d".into(),
        "--name".into(),
        name.into(),
    ];
    args.extend(config.iter().cloned());
    args
}

#[cfg(not(windows))]
pub use self::systemd::{install, remove, template_unit_text};
#[cfg(windows)]
pub use self::windows::{install, remove, run_windows_service};

#[cfg(not(windows))]
mod systemd {
    use super::*;

    /// Seconds systemd waits for a stop: the daemon's shutdown timeout plus
    /// the time to quit the engine.
    const STOP_TIMEOUT_SECS: u64 = 120;

    fn unit_name(name: &str) -> String {
        format!("colinux-{name}.service")
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// System units for root, user units otherwise; `COLINUX_SYSTEMD_UNIT_DIR`
    /// overrides (packaging, tests).
    fn unit_dir() -> Result<PathBuf, StartError> {
        if let Some(dir) = std::env::var_os("COLINUX_SYSTEMD_UNIT_DIR") {
            return Ok(PathBuf::from(dir));
        }
        if is_root() {
            return Ok(PathBuf::from("/etc/systemd/system"));
        }
        let home = std::env::var_os("HOME")
            .ok_or_else(|| failed("HOME is not set: cannot place a user unit".into()))?;
        Ok(PathBuf::from(home).join(".config/systemd/user"))
    }

    fn target() -> &'static str {
        if is_root() {
            "multi-user.target"
        } else {
            "default.target"
        }
    }

    /// One `ExecStart=` word, quoted for systemd: `%` and `$` are its
    /// specifier and variable characters.
    fn quote(word: &str) -> String {
        let escaped = word.replace('%', "%%").replace('$', "$$");
        if !escaped.is_empty()
            && !escaped
                .chars()
                .any(|c| c.is_whitespace() || "\"'\\;".contains(c))
        {
            return escaped;
        }
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    }

    pub fn unit_text(name: &str, exe: &Path, cwd: &Path, config: &[String]) -> String {
        let mut exec = vec![quote(&exe.display().to_string())];
        exec.extend(service_args(name, cwd, config).iter().map(|w| quote(w)));
        unit(
            &format!("Written by colinux-daemon --install-service {name}"),
            &format!("coLinux guest {name}"),
            &exec.join(" "),
            target(),
        )
    }

    /// The packaged template `colinux@.service`: `systemctl start colinux@NAME`
    /// runs the guest NAME from `CONFIG_DIR/NAME.conf`, with the same stop and
    /// restart settings as an installed service.
    pub fn template_unit_text(exe: &Path, config_dir: &Path) -> String {
        // `%i` is systemd's instance name, so it must not be escaped like
        // the rest of the word: NUL, which no path holds, stands in for it.
        let conf = quote(&format!("@{}/\0.conf", config_dir.display())).replace('\0', "%i");
        unit(
            &format!(
                "Installed by the colinux package: colinux@NAME runs {}/NAME.conf",
                config_dir.display()
            ),
            "coLinux guest %i",
            &format!("{} -d --name %i {conf}", quote(&exe.display().to_string())),
            "multi-user.target",
        )
    }

    fn unit(header: &str, description: &str, exec: &str, target: &str) -> String {
        format!(
            "# {header}\n\
             [Unit]\n\
             Description={description}\n\
             Documentation=man:colinux-daemon(1)\n\
             After=network-online.target\n\
             Wants=network-online.target\n\
             \n\
             [Service]\n\
             Type=simple\n\
             ExecStart={exec}\n\
             # SIGTERM goes to the daemon only: it powers the guest off over ACPI\n\
             # and stops the engine itself.\n\
             KillMode=mixed\n\
             TimeoutStopSec={STOP_TIMEOUT_SECS}\n\
             # Exit code 5: the guest rebooted; start it again.\n\
             RestartForceExitStatus=5\n\
             \n\
             [Install]\n\
             WantedBy={target}\n"
        )
    }

    fn systemd_running() -> bool {
        Path::new("/run/systemd/system").is_dir()
    }

    fn systemctl(args: &[&str]) -> Result<(), StartError> {
        let mut cmd = std::process::Command::new("systemctl");
        if !is_root() {
            cmd.arg("--user");
        }
        let output = cmd
            .args(args)
            .output()
            .map_err(|e| failed(format!("cannot run systemctl: {e}")))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(failed(format!(
                "systemctl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    pub fn install(name: &str, config: &[String]) -> Result<String, StartError> {
        let dir = unit_dir()?;
        let unit = unit_name(name);
        let path = dir.join(&unit);
        if path.exists() {
            return Err(StartError::new(
                exit::CONFIG,
                format!(
                    "{}: already exists; remove it first with --remove-service {name}",
                    path.display()
                ),
            ));
        }
        let cwd = std::env::current_dir().map_err(|e| failed(format!("current directory: {e}")))?;
        let text = unit_text(name, &daemon_exe()?, &cwd, config);
        let wants = dir.join(format!("{}.wants", target()));
        std::fs::create_dir_all(&wants).map_err(|e| failed(format!("{}: {e}", wants.display())))?;
        crate::host::write_atomically(&path, &text)
            .map_err(|e| failed(format!("{}: {e}", path.display())))?;
        // Enabling is this symlink, as `systemctl enable` would make it.
        let link = wants.join(&unit);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(Path::new("..").join(&unit), &link)
            .map_err(|e| failed(format!("{}: {e}", link.display())))?;
        let mut report = format!("installed and enabled {} (starts at boot)", path.display());
        if systemd_running() && std::env::var_os("COLINUX_SYSTEMD_UNIT_DIR").is_none() {
            systemctl(&["daemon-reload"])?;
            report.push_str(&format!(
                "\nstart it now with: systemctl{} start {unit}",
                if is_root() { "" } else { " --user" }
            ));
        } else {
            report
                .push_str("\nsystemd is not running here: it picks the unit up at its next start");
        }
        Ok(report)
    }

    pub fn remove(name: &str) -> Result<String, StartError> {
        let dir = unit_dir()?;
        let unit = unit_name(name);
        let path = dir.join(&unit);
        if !path.exists() {
            return Err(StartError::new(
                exit::CONFIG,
                format!("no service {name:?}: {} does not exist", path.display()),
            ));
        }
        let live = systemd_running() && std::env::var_os("COLINUX_SYSTEMD_UNIT_DIR").is_none();
        if live {
            // Waits for the guest's clean power-off.
            systemctl(&["stop", &unit])?;
        }
        let _ = std::fs::remove_file(dir.join(format!("{}.wants", target())).join(&unit));
        std::fs::remove_file(&path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
        if live {
            systemctl(&["daemon-reload"])?;
        }
        Ok(format!("stopped, disabled and removed {}", path.display()))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_unit_runs_the_daemon_detached_and_stops_it_gently() {
            let text = unit_text(
                "web",
                Path::new("/usr/bin/colinux-daemon"),
                Path::new("/srv/my guests"),
                &[
                    "@web.conf".into(),
                    "root=/dev/cobd0".into(),
                    "init=/bin/50%$x".into(),
                ],
            );
            assert!(text.contains(
                "ExecStart=/usr/bin/colinux-daemon --cwd \"/srv/my guests\" -d --name web @web.conf root=/dev/cobd0 init=/bin/50%%$$x\n"
            ), "{text}");
            assert!(
                text.contains("KillMode=mixed\n") && text.contains("RestartForceExitStatus=5\n")
            );
        }

        #[test]
        fn the_template_runs_the_instance_config_with_the_same_settings() {
            let text = template_unit_text(
                Path::new("/usr/bin/colinux-daemon"),
                Path::new("/etc/colinux"),
            );
            assert!(
                text.contains(
                    "ExecStart=/usr/bin/colinux-daemon -d --name %i @/etc/colinux/%i.conf\n"
                ),
                "{text}"
            );
            let spaced =
                template_unit_text(Path::new("/usr/bin/colinux-daemon"), Path::new("/a b"));
            assert!(spaced.contains(" \"@/a b/%i.conf\"\n"), "{spaced}");
            let service = unit_text(
                "x",
                Path::new("/usr/bin/colinux-daemon"),
                Path::new("/"),
                &[],
            );
            let settings = |t: &str| {
                t.lines()
                    .skip_while(|l| !l.starts_with("KillMode"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            assert_eq!(
                settings(&text),
                settings(&service).replace("default.target", "multi-user.target")
            );
        }

        #[test]
        fn install_and_remove_in_a_unit_directory() {
            let dir = tempfile::tempdir().unwrap();
            // The only test in this binary that sets it.
            std::env::set_var("COLINUX_SYSTEMD_UNIT_DIR", dir.path());
            let report = install("svc-test", &["@g.conf".into()]).unwrap();
            assert!(report.contains("installed and enabled"), "{report}");
            let unit = dir.path().join("colinux-svc-test.service");
            let wants = dir
                .path()
                .join(format!("{}.wants/colinux-svc-test.service", target()));
            assert!(std::fs::read_to_string(&unit)
                .unwrap()
                .contains("--name svc-test @g.conf"));
            assert_eq!(
                std::fs::read_to_string(&wants).unwrap(),
                std::fs::read_to_string(&unit).unwrap()
            );
            let again = install("svc-test", &[]).unwrap_err();
            assert!(
                again.message.contains("already exists"),
                "{}",
                again.message
            );
            remove("svc-test").unwrap();
            assert!(!unit.exists() && std::fs::symlink_metadata(&wants).is_err());
            assert!(remove("svc-test")
                .unwrap_err()
                .message
                .contains("no service"));
            std::env::remove_var("COLINUX_SYSTEMD_UNIT_DIR");
        }
    }
}

#[cfg(windows)]
mod windows {
    use super::*;
    use std::ffi::OsString;
    use std::sync::mpsc::{self, Sender};
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    use windows_service::service::{
        ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode,
        ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    use windows_service::{define_windows_service, service_dispatcher};

    use crate::daemon::Cli;
    use crate::supervise::Msg;

    fn service_name(name: &str) -> String {
        format!("colinux-{name}")
    }

    fn manager(access: ServiceManagerAccess) -> Result<ServiceManager, StartError> {
        ServiceManager::local_computer(None::<&str>, access).map_err(|e| {
            failed(format!(
                "cannot open the service manager (run as Administrator): {e}"
            ))
        })
    }

    pub fn install(name: &str, config: &[String]) -> Result<String, StartError> {
        let cwd = std::env::current_dir().map_err(|e| failed(format!("current directory: {e}")))?;
        let mut args: Vec<OsString> = vec!["--run-service".into(), name.into()];
        args.extend(
            service_args(name, &cwd, config)
                .into_iter()
                .map(OsString::from),
        );
        let info = ServiceInfo {
            name: service_name(name).into(),
            display_name: format!("coLinux guest {name}").into(),
            service_type: ServiceType::OWN_PROCESS,
            start_type: ServiceStartType::AutoStart,
            error_control: ServiceErrorControl::Normal,
            executable_path: daemon_exe()?,
            launch_arguments: args,
            dependencies: vec![],
            account_name: None,
            account_password: None,
        };
        let manager =
            manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
        manager
            .create_service(&info, ServiceAccess::CHANGE_CONFIG)
            .map_err(|e| failed(format!("cannot create service {}: {e}", service_name(name))))?;
        Ok(format!(
            "installed service {} (starts at boot); start it now with: sc start {}",
            service_name(name),
            service_name(name)
        ))
    }

    pub fn remove(name: &str) -> Result<String, StartError> {
        let manager = manager(ServiceManagerAccess::CONNECT)?;
        let access = ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE;
        let service = manager
            .open_service(service_name(name), access)
            .map_err(|e| {
                StartError::new(
                    exit::CONFIG,
                    format!("no service {}: {e}", service_name(name)),
                )
            })?;
        if service
            .query_status()
            .map(|s| s.current_state != ServiceState::Stopped)
            .unwrap_or(false)
        {
            let _ = service.stop();
            // The guest powers off first: allow the daemon's whole timeout.
            for _ in 0..240 {
                if service
                    .query_status()
                    .map(|s| s.current_state == ServiceState::Stopped)
                    .unwrap_or(true)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        service
            .delete()
            .map_err(|e| failed(format!("cannot delete service {}: {e}", service_name(name))))?;
        Ok(format!(
            "stopped and removed service {}",
            service_name(name)
        ))
    }

    /// The command line the dispatcher thread runs with.
    static CLI: OnceLock<Mutex<Option<(String, Cli)>>> = OnceLock::new();

    define_windows_service!(ffi_service_main, service_main);

    pub fn run_windows_service(name: String, cli: Cli) -> Result<u8, StartError> {
        let _ = CLI.set(Mutex::new(Some((name.clone(), cli))));
        service_dispatcher::start(service_name(&name), ffi_service_main).map_err(|e| {
            failed(format!(
                "cannot start as a service (run it from the service manager): {e}"
            ))
        })?;
        Ok(0)
    }

    fn service_main(_arguments: Vec<OsString>) {
        let Some((name, cli)) = CLI.get().and_then(|c| c.lock().ok()?.take()) else {
            return;
        };
        let (tx, rx) = mpsc::channel::<Msg>();
        let stop: Mutex<Sender<Msg>> = Mutex::new(tx.clone());
        let handler = move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                if let Ok(stop) = stop.lock() {
                    let _ = stop.send(Msg::Stop);
                }
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        };
        let Ok(status) = service_control_handler::register(service_name(&name), handler) else {
            return;
        };
        let report = |state, exit_code, accept| {
            let _ = status.set_service_status(ServiceStatus {
                service_type: ServiceType::OWN_PROCESS,
                current_state: state,
                controls_accepted: accept,
                exit_code,
                checkpoint: 0,
                wait_hint: Duration::from_secs(120),
                process_id: None,
            });
        };
        report(
            ServiceState::Running,
            ServiceExitCode::Win32(0),
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
        );
        let code = crate::daemon::load(&cli.config)
            .and_then(|settings| crate::daemon::run(&cli, &name, &settings, (tx, rx)))
            .unwrap_or_else(|e| {
                tracing::error!("{}", e.message);
                e.code
            });
        let exit_code = if code == 0 {
            ServiceExitCode::Win32(0)
        } else {
            ServiceExitCode::ServiceSpecific(u32::from(code))
        };
        report(
            ServiceState::Stopped,
            exit_code,
            ServiceControlAccept::empty(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_runs_detached_under_its_name_from_the_install_directory() {
        let args = service_args("web", Path::new("/srv/guests"), &["@web.conf".into()]);
        assert_eq!(
            args,
            ["--cwd", "/srv/guests", "-d", "--name", "web", "@web.conf"]
        );
    }
}
